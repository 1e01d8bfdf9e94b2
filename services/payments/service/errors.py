"""The domain errors of payments, each with its HTTP status and stable code."""

from __future__ import annotations

from shared.errors import Conflict, NotFound, ProblemError, Unprocessable


class InsufficientFunds(ProblemError):
    status, code, title = 402, "insufficient_funds", "Insufficient funds"


class UnknownAccount(Unprocessable):
    code, title = "unknown_account", "Unknown account"


class UnknownCharge(Unprocessable):
    code, title = "unknown_charge", "Unknown charge"


class RefundExceedsCharge(Unprocessable):
    code, title = "refund_exceeds_charge", "Refund exceeds the charge"


class CaptureExceedsHold(Unprocessable):
    code, title = "capture_exceeds_hold", "Capture exceeds the hold"


class HoldTooLong(Unprocessable):
    code, title = "hold_too_long", "Hold expiry too far away"


class DuplicateTransfer(Conflict):
    code, title = "duplicate_transfer", "Transfer id already used"


class HoldNotPending(Conflict):
    code, title = "hold_not_pending", "Hold already settled"


class HoldExpired(Conflict):
    code, title = "hold_expired", "Hold expired"


class HoldNotFound(NotFound):
    code, title = "hold_not_found", "No such hold"


class PaymentRequestNotFound(NotFound):
    code, title = "payment_request_not_found", "No such payment request"


class LedgerCorrupted(RuntimeError):
    """A system account cannot cover what the ledger says it holds: never a client's fault."""
