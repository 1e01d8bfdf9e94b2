"""Payments rules, one module per sub-domain: wallets, posting, charges, holds, VietQR
payment requests, bank notifications, ledger checks.

No SQL here (see repository/), no HTTP (see endpoints.py), and never a commit: the caller's
transaction holds the balances, the journal and the outbox event together.
"""
