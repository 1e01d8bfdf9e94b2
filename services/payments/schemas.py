"""Request and response models of the payments API; amounts are whole VND everywhere."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from shared.fields import KeptMoment, KeptText

MAX_AMOUNT = 100_000_000  # VND; larger movements go through the bank, not the wallet API

Amount = Annotated[
    StrictInt,
    Field(gt=0, le=MAX_AMOUNT, description="Whole VND, from 1 to 100,000,000", examples=[8000]),
]
Currency = Annotated[Literal["VND"], Field(description="Only VND is accepted")]
LotId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
TransferId = Annotated[
    uuid.UUID | None,
    Field(
        description=(
            "Client-chosen id of the ledger transfer (e.g. a UUIDv7); unique across the ledger. "
            "Generated when omitted."
        )
    ),
]


class WalletKind(StrEnum):
    rider_wallet = "rider_wallet"
    vehicle_wallet = "vehicle_wallet"


class AccountKind(StrEnum):
    rider_wallet = "rider_wallet"
    vehicle_wallet = "vehicle_wallet"
    transit_revenue = "transit_revenue"
    parking_revenue = "parking_revenue"
    holds = "holds"
    bank_clearing = "bank_clearing"
    suspense = "suspense"


WALLET_KINDS = frozenset({AccountKind.rider_wallet, AccountKind.vehicle_wallet})


class Source(StrEnum):
    transit = "transit"
    parking = "parking"


class TransferKind(StrEnum):
    charge = "charge"
    hold = "hold"
    capture = "capture"
    release = "release"
    refund = "refund"
    topup = "topup"
    payment = "payment"
    suspense = "suspense"


class HoldStatus(StrEnum):
    pending = "pending"
    captured = "captured"
    voided = "voided"
    expired = "expired"


class PaymentPurpose(StrEnum):
    wallet_topup = "wallet_topup"
    parking_fee = "parking_fee"


class PaymentRequestStatus(StrEnum):
    pending = "pending"
    paid = "paid"


class StrictRequest(BaseModel):
    """Request bodies refuse unknown fields: a misspelt `amout` must not pass silently."""

    model_config = ConfigDict(extra="forbid")


class RevenueTarget(StrictRequest):
    source: Source = Field(description="`transit`, or `parking` together with `lot_id`")
    lot_id: LotId | None = Field(default=None, description="The parking lot (parking only)")

    @model_validator(mode="after")
    def _lot_only_for_parking(self) -> Self:
        if (self.source is Source.parking) != (self.lot_id is not None):
            raise ValueError("lot_id is required for parking and not allowed for transit")
        return self


# Accounts ---------------------------------------------------------------------------------------


class AccountCreate(StrictRequest):
    kind: WalletKind
    owner_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")


class AccountRead(BaseModel):
    id: uuid.UUID
    code: str
    kind: AccountKind
    owner_id: str | None
    balance: int = Field(description="Available balance in VND (held money excluded)")
    currency: Literal["VND"] = "VND"


# Charges, holds, refunds ------------------------------------------------------------------------


class ChargeCreate(RevenueTarget):
    account_id: uuid.UUID = Field(description="The wallet to debit")
    amount: Amount
    currency: Currency = "VND"
    transfer_id: TransferId = None


class ChargeRead(BaseModel):
    id: uuid.UUID = Field(description="The charge's ledger transfer id; refunds name it")
    account_id: uuid.UUID
    amount: int
    currency: Literal["VND"] = "VND"
    source: Source
    lot_id: str | None
    revenue_account_id: uuid.UUID
    balance: int = Field(description="The wallet's balance after the charge")
    posted_at: datetime


class HoldCreate(RevenueTarget):
    account_id: uuid.UUID = Field(description="The wallet whose funds are reserved")
    amount: Amount
    currency: Currency = "VND"
    transfer_id: TransferId = None
    expires_in_s: StrictInt | None = Field(
        default=None,
        gt=0,
        le=10**9,  # ~31 years: past it no time type holds it (a 500); below, `hold_too_long`
        description="Seconds until the hold is voided automatically; the service default if null",
    )


class HoldCapture(StrictRequest):
    amount: Amount = Field(description="At most the held amount; the rest goes back to the wallet")
    currency: Currency = "VND"


class HoldRead(BaseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    amount: int = Field(description="The amount reserved")
    captured_amount: int
    released_amount: int = Field(description="What went back to the wallet on capture or void")
    currency: Literal["VND"] = "VND"
    status: HoldStatus
    source: Source
    lot_id: str | None
    hold_transfer_id: uuid.UUID
    capture_transfer_id: uuid.UUID | None
    release_transfer_id: uuid.UUID | None
    balance: int = Field(description="The wallet's available balance now")
    expires_at: datetime
    created_at: datetime
    settled_at: datetime | None


class RefundCreate(StrictRequest):
    charge_id: uuid.UUID = Field(description="The charge (or hold capture) transfer to refund")
    amount: Amount
    currency: Currency = "VND"
    transfer_id: TransferId = None


class RefundRead(BaseModel):
    id: uuid.UUID = Field(description="The refund's ledger transfer id")
    charge_id: uuid.UUID
    account_id: uuid.UUID = Field(description="The wallet credited: always the charged one")
    amount: int
    currency: Literal["VND"] = "VND"
    refunded_total: int = Field(description="All refunds of this charge so far, this one included")
    refundable: int = Field(description="What can still be refunded")
    balance: int = Field(description="The wallet's balance after the refund")
    posted_at: datetime


# VietQR payment requests and the bank -----------------------------------------------------------


class TopupCreate(StrictRequest):
    account_id: uuid.UUID = Field(description="The wallet to credit once the bank confirms")
    amount: Amount
    currency: Currency = "VND"


class ParkingPaymentCreate(StrictRequest):
    lot_id: LotId
    parking_session_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    amount: Amount = Field(description="The exact fee; the bank transfer must match it")
    currency: Currency = "VND"


class PaymentRequestRead(BaseModel):
    id: uuid.UUID
    purpose: PaymentPurpose
    reference: str = Field(description="Unique reference carried in VietQR field 62 (05)")
    amount: int
    currency: Literal["VND"] = "VND"
    status: PaymentRequestStatus
    account_id: uuid.UUID | None = Field(description="The wallet credited (top-ups)")
    lot_id: str | None
    parking_session_id: str | None
    qr: str = Field(description="The dynamic VietQR payload (EMVCo), CRC included")
    qr_png_base64: str | None = Field(
        description="The same QR as a PNG, base64: top-ups only (a rider's screen shows it). "
        "Lane terminals render `qr` themselves or fetch `qr_png_url`; rendering a PNG costs "
        "≈ 15 ms of CPU, which a barrier decision should not wait for."
    )
    qr_png_url: str = Field(description="Where to fetch the PNG")
    paid_transfer_id: uuid.UUID | None
    created_at: datetime
    paid_at: datetime | None


class BankNotification(BaseModel):
    """A credit on the collection account, as the bank reports it."""

    model_config = ConfigDict(extra="ignore")  # banks add fields; unknown ones are harmless

    transaction_id: KeptText = Field(
        min_length=1, max_length=64, description="The bank's unique id"
    )
    amount: StrictInt = Field(gt=0, le=10**13, description="What arrived, whole VND")
    currency: Currency = "VND"
    bank_bin: str = Field(pattern=r"^[0-9]{6}$")
    account: KeptText = Field(min_length=1, max_length=19, description="The credited account")
    reference: KeptText | None = Field(default=None, max_length=25, description="VietQR 62.05")
    description: KeptText | None = Field(default=None, max_length=255, description="Transfer text")
    occurred_at: KeptMoment = None


class NotificationOutcome(StrEnum):
    credited = "credited"
    suspense = "suspense"


class SuspenseCause(StrEnum):
    unknown_reference = "unknown_reference"
    missing_reference = "missing_reference"
    amount_mismatch = "amount_mismatch"
    already_paid = "already_paid"
    foreign_account = "foreign_account"


class BankNotificationResult(BaseModel):
    notification_id: uuid.UUID
    transaction_id: str
    outcome: NotificationOutcome
    cause: SuspenseCause | None
    duplicate: bool = Field(description="True when this transaction was already received")
    transfer_id: uuid.UUID
    payment_request_id: uuid.UUID | None


# Ledger checks and reconciliation ---------------------------------------------------------------


class UnbalancedTransfer(BaseModel):
    transfer_id: uuid.UUID
    legs: int
    postings_total: int


class AccountMismatch(BaseModel):
    account_id: uuid.UUID
    code: str
    balance: int
    postings_total: int


class LedgerInvariant(BaseModel):
    ok: bool
    postings_total: int = Field(description="Must be 0: every debit has its credit")
    balances_total: int = Field(description="Must be 0 too")
    accounts_checked: int
    transfers_checked: int
    unbalanced_transfers: list[UnbalancedTransfer]
    mismatched_accounts: list[AccountMismatch]
    checked_at: datetime


class MismatchCause(StrEnum):
    unknown_reference = "unknown_reference"
    missing_reference = "missing_reference"
    amount_mismatch = "amount_mismatch"
    already_paid = "already_paid"
    foreign_account = "foreign_account"
    notification_not_in_ledger = "notification_not_in_ledger"
    paid_without_notification = "paid_without_notification"
    clearing_differs_from_notifications = "clearing_differs_from_notifications"
    revenue_differs_from_journal = "revenue_differs_from_journal"
    unbalanced_transfer = "unbalanced_transfer"


class Mismatch(BaseModel):
    area: Literal["bank", "revenue", "ledger"]
    subject: str = Field(description="What differs: a bank transaction, a source, a transfer")
    cause: MismatchCause
    expected: int | None
    actual: int | None
    detail: str


class BankTotals(BaseModel):
    notifications: int
    notified_amount: int
    credited_amount: int = Field(description="Matched a payment request: wallet or parking")
    suspense_amount: int
    clearing_amount: int = Field(description="Money into bank clearing in the ledger")
    unpaid_requests: int = Field(description="Requested but not (yet) paid: not a mismatch")
    unpaid_amount: int


class RevenueLine(BaseModel):
    source: Source
    lot_id: str | None
    charges: int
    charged_amount: int
    captured_amount: int
    qr_paid_amount: int = Field(description="VietQR payments straight to revenue (parking fees)")
    refunds: int
    refunded_amount: int
    net_amount: int = Field(description="charged + captured + qr_paid − refunded")
    ledger_amount: int = Field(description="Net postings on the revenue sub-accounts that day")


class ReconciliationReport(BaseModel):
    day: date
    timezone: str
    window_start: datetime
    window_end: datetime
    bank: BankTotals
    revenue: list[RevenueLine]
    mismatches: list[Mismatch]
    ok: bool
