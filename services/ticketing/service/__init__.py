"""Ticketing rules, one module per sub-domain, and the clock and ids they share. No SQL here
(see repository.py), no HTTP (see endpoints.py; payments is reached through
`payments.Payments`).

Most functions run inside the caller's transaction and never commit. The purchase saga and the
wallet helpers cannot: a payment is an HTTP call that must sit *between* two commits (the
pending purchase before it, the ticket after it). Those take the `Database` and own their
transactions, exactly as an endpoint does; their names say so (`place_purchase`,
`advance_purchase`, `reconcile_purchases`, `ensure_wallet`).
"""

from __future__ import annotations

LIST_LIMIT = 200
