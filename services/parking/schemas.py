"""Request and response models of the parking API; money is whole VND, times carry offsets."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime, time
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
    model_validator,
)

from services.parking.tariffs import VehicleType
from shared.fields import Day as Day  # the endpoints take these two from here
from shared.fields import Moment as Moment
from shared.fields import Text

LOT_ID_PATTERN = r"^[A-Z0-9][A-Z0-9-]{0,19}$"
LANE_ID_PATTERN = r"^[A-Z0-9][A-Z0-9-]{0,29}$"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$"

_HH_MM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _local_time(value: object) -> time:
    if isinstance(value, time) and value.tzinfo is None:
        return value
    if isinstance(value, str) and _HH_MM.fullmatch(value):
        return time.fromisoformat(value)
    raise ValueError("a local Hanoi time of day as HH:MM (no offset)")


# A time of day in Hanoi, "HH:MM" on the wire (JSON Schema's "time" format needs an offset).
LocalTime = Annotated[
    time,
    PlainValidator(_local_time),
    PlainSerializer(lambda value: value.strftime("%H:%M"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": f"^{_HH_MM.pattern}$", "examples": ["06:00"]}),
]

LotId = Annotated[str, Field(pattern=LOT_ID_PATTERN, examples=["HK-01"])]
LaneId = Annotated[str, Field(pattern=LANE_ID_PATTERN, examples=["HK-01-IN1"])]
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN, examples=["hk01-in1-cam"])]
Price = Annotated[StrictInt, Field(ge=0, le=100_000_000, description="Whole VND")]
Reason = Annotated[Text, Field(min_length=3, max_length=500)]
OperatorName = Annotated[
    Text, Field(min_length=1, max_length=60, description="Who acts, for the audit trail")
]


class StrictRequest(BaseModel):
    """Request bodies refuse unknown fields: a misspelt `occured_at` must not pass silently."""

    model_config = ConfigDict(extra="forbid")


class Direction(StrEnum):
    entry = "entry"
    exit = "exit"


class DeviceKind(StrEnum):
    lane_terminal = "lane_terminal"
    camera = "camera"


class SessionStatus(StrEnum):
    open = "open"  # the vehicle is inside
    awaiting_payment = "awaiting_payment"  # at the exit barrier, VietQR shown
    closed = "closed"  # the vehicle left


class Settlement(StrEnum):
    free = "free"  # nothing to pay (grace period)
    wallet = "wallet"  # the vehicle wallet paid (hold captured, or charged)
    vietqr = "vietqr"  # paid by bank transfer at the barrier
    debt = "debt"  # let out on the fallback; billed to the plate later
    waived = "waived"  # an operator waived the fee


class DebtStatus(StrEnum):
    outstanding = "outstanding"
    paid = "paid"


class EntryMethod(StrEnum):
    plate = "plate"
    account_qr = "account_qr"
    rfid = "rfid"
    operator = "operator"


# Lots, lanes, devices ---------------------------------------------------------------------------


class LaneRead(BaseModel):
    lane_id: str
    lot_id: str
    direction: Direction
    vehicle_type: VehicleType | None = Field(description="Null for a lane both types use")
    enabled: bool


class LotRead(BaseModel):
    lot_id: str
    name: str
    district: str
    address: str
    motorbike_capacity: int = Field(ge=0)
    car_capacity: int = Field(ge=0)
    entry_lanes: int = Field(ge=0)
    exit_lanes: int = Field(ge=0)
    lanes: list[LaneRead]


class LotUpsert(StrictRequest):
    name: Text = Field(min_length=1, max_length=120)
    district: Text = Field(min_length=1, max_length=60)
    address: Text = Field(min_length=1, max_length=200)
    motorbike_capacity: StrictInt = Field(ge=0, le=100_000)
    car_capacity: StrictInt = Field(ge=0, le=100_000)


class LaneUpsert(StrictRequest):
    direction: Direction
    vehicle_type: VehicleType | None = None
    enabled: StrictBool = True


class CapacityRead(BaseModel):
    vehicle_type: VehicleType
    capacity: int
    occupied: int
    free: int


class OccupancyRead(BaseModel):
    lot_id: str
    vehicles: list[CapacityRead]


class DeviceCreate(StrictRequest):
    device_id: DeviceId
    kind: DeviceKind
    lot_id: LotId
    lane_id: LaneId | None = Field(
        default=None, description="The lane it serves; null for a device serving every lane"
    )


class DeviceRead(BaseModel):
    device_id: str
    kind: DeviceKind
    lot_id: str
    lane_id: str | None
    enabled: bool
    created_at: datetime
    revoked_at: datetime | None


class DeviceCredentials(DeviceRead):
    secret: str = Field(description="The device's HMAC key: shown once, store it on the device")


# Tariffs ----------------------------------------------------------------------------------------


class TariffCreate(StrictRequest):
    tariff_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{2,59}$", examples=["hk01-2027-car"])
    vehicle_type: VehicleType
    lot_id: LotId | None = Field(default=None, description="Null: the city-wide default")
    effective_from: Moment = Field(description="Must lie in the future")
    first_block_minutes: StrictInt = Field(gt=0, le=24 * 60)
    first_block_price: Price
    per_hour_price: Price
    night_turn_price: Price
    grace_minutes: StrictInt = Field(default=0, ge=0, le=120)
    daily_cap: Price | None = None
    day_starts_at: LocalTime = Field(default=time(6), json_schema_extra={"default": "06:00"})
    day_ends_at: LocalTime = Field(default=time(18), json_schema_extra={"default": "18:00"})

    @model_validator(mode="after")
    def _day_window(self) -> Self:
        if not self.day_starts_at < self.day_ends_at:
            raise ValueError("the day must start before it ends")
        return self


class TariffRead(BaseModel):
    tariff_id: str
    vehicle_type: VehicleType
    lot_id: str | None
    effective_from: datetime
    first_block_minutes: int
    first_block_price: int
    per_hour_price: int
    night_turn_price: int
    grace_minutes: int
    daily_cap: int | None
    day_starts_at: LocalTime
    day_ends_at: LocalTime


class PriceLineRead(BaseModel):
    kind: str = Field(description="first_block, hourly, night_turn, daily_cap_adjustment, grace")
    tariff_id: str
    local_date: date
    start: datetime
    end: datetime
    quantity: int
    unit_price: int
    amount: int
    description: str


class QuoteRead(BaseModel):
    lot_id: str
    vehicle_type: VehicleType
    entry_at: datetime
    exit_at: datetime
    total: int
    currency: Literal["VND"] = "VND"
    lines: list[PriceLineRead]


# Vehicles ---------------------------------------------------------------------------------------


class VehicleCreate(StrictRequest):
    plate: Text = Field(min_length=1, max_length=20, examples=["29A-123.45"])
    vehicle_type: VehicleType
    owner_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    rfid_tag: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{8,64}$")


class VehicleRead(BaseModel):
    vehicle_id: uuid.UUID
    plate: str
    vehicle_type: VehicleType
    owner_id: str
    wallet_account_id: uuid.UUID = Field(description="The owner's vehicle wallet in payments")
    rfid_tag: str | None
    account_qr: str = Field(description="Shown by the owner's app at entry lanes")
    registered_at: datetime


# Entry and exit ---------------------------------------------------------------------------------


class PlateRead(StrictRequest):
    plate: Text = Field(min_length=1, max_length=20, description="As read: any spacing or case")
    confidence: StrictFloat = Field(ge=0, le=1, description="The camera's confidence in the read")
    image_ref: Text | None = Field(
        default=None, max_length=200, description="Where the camera stored the picture"
    )


class LaneEvent(StrictRequest):
    lot_id: LotId
    lane_id: LaneId
    occurred_at: Moment = Field(
        description="When the vehicle was at the lane, by the device's clock (with offset)"
    )
    vehicle_type: VehicleType | None = Field(
        default=None, description="Default: the registration's, else the lane's, else the plate's"
    )
    plate_read: PlateRead | None = None
    account_qr: Text | None = Field(default=None, min_length=1, max_length=120)
    rfid_tag: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{8,64}$")

    @model_validator(mode="after")
    def _identified(self) -> Self:
        if self.plate_read is None and self.account_qr is None and self.rfid_tag is None:
            raise ValueError("give plate_read, account_qr or rfid_tag")
        if self.account_qr is not None and self.rfid_tag is not None:
            raise ValueError("give account_qr or rfid_tag, not both")
        return self


class EntryCreate(LaneEvent):
    pass


class ExitCreate(LaneEvent):
    offline: StrictBool = Field(
        default=False,
        description=(
            "True when the lane was offline and already let the vehicle out: the server then"
            " never asks for a VietQR payment; what the wallet cannot pay becomes a debt"
        ),
    )


class EntryOutcome(StrEnum):
    open = "open"
    full = "full"


class ExitOutcome(StrEnum):
    open = "open"
    pay = "pay"


class Occupancy(BaseModel):
    capacity: int
    occupied: int
    free: int


class EntryDecision(BaseModel):
    decision: EntryOutcome = Field(description="`open`: raise the barrier; `full`: do not")
    reason: str = Field(description="`entered`, `already_inside` (a repeated read), `lot_full`")
    session_id: uuid.UUID | None
    lot_id: str
    lane_id: str
    vehicle_type: VehicleType
    plate: str | None = Field(description="The normalised plate, for the lane display")
    registered: bool
    hold_amount: int | None = Field(description="Held on the vehicle wallet, VND")
    hold_status: str | None = Field(
        description="`held`, `insufficient_funds` or `payments_unavailable` (registered only)"
    )
    needs_review: bool
    review_reasons: list[str]
    occupancy: Occupancy
    outstanding_debt: int = Field(description="VND this plate still owes from earlier sessions")
    entry_at: datetime | None


class PaymentQR(BaseModel):
    payment_request_id: uuid.UUID
    reference: str = Field(description="VietQR field 62 reference; the bank transfer carries it")
    amount: int
    qr: str = Field(description="The dynamic VietQR payload to render (EMVCo, CRC included)")


class ExitDecision(BaseModel):
    decision: ExitOutcome = Field(
        description="`open`: raise the barrier; `pay`: show `payment.qr` and poll exit-status"
    )
    reason: str = Field(
        description=(
            "`free`, `paid_from_wallet`, `paid_by_vietqr`, `waived`, `payment_required`,"
            " `debt_recorded` (fallback)"
        )
    )
    session_id: uuid.UUID
    status: SessionStatus
    lot_id: str
    lane_id: str | None
    plate: str
    vehicle_type: VehicleType
    entry_at: datetime
    exit_at: datetime | None
    fee: int | None
    lines: list[PriceLineRead]
    settlement: Settlement | None
    payment: PaymentQR | None
    fallback_after: datetime | None = Field(
        description="From then on the lane may let the vehicle out as a debt (`fallback-exit`)"
    )
    debt_amount: int
    receipt_token: str | None = Field(
        description=(
            "Show it (as a QR) and print it for the driver only: with the session id it opens"
            " the receipt and its disputes (`GET /v1/receipts/{session_id}?token=…`). Never"
            " handed out anywhere else"
        )
    )
    receipt_code: str | None = Field(
        description=(
            "Show it and print it on the receipt: with the plate it finds the receipt again"
            " (`GET /v1/receipts?plate=&code=`), read only"
        ),
        examples=["K7QMD-3XRW9"],
    )


# Sessions (operators) ---------------------------------------------------------------------------


class SessionRead(BaseModel):
    session_id: uuid.UUID
    lot_id: str
    status: SessionStatus
    vehicle_type: VehicleType
    plate: str
    entry_method: EntryMethod
    entry_lane_id: str
    entry_at: datetime
    entry_confidence: float | None
    entry_image_ref: str | None
    exit_lane_id: str | None
    exit_at: datetime | None
    exit_offline: bool
    registered: bool
    hold_id: uuid.UUID | None
    hold_amount: int | None
    hold_status: str | None
    needs_review: bool
    review_reasons: list[str]
    fee: int | None
    lines: list[PriceLineRead]
    settlement: Settlement | None
    paid_amount: int
    debt_status: DebtStatus | None
    payment_request_id: uuid.UUID | None
    payment_reference: str | None
    closed_at: datetime | None


class OverrideAction(StrEnum):
    correct_plate = "correct_plate"
    correct_times = "correct_times"
    waive_fee = "waive_fee"
    close_as_debt = "close_as_debt"


class OverrideCreate(StrictRequest):
    action: OverrideAction = Field(
        description=(
            "`correct_plate` (a misread: also clears the review flag), `correct_times` (reprice"
            " a closed session and refund the difference), `waive_fee` (refund what was paid),"
            " `close_as_debt` (the vehicle left without an exit read)"
        )
    )
    operator: OperatorName
    reason: Reason
    plate: Text | None = Field(default=None, min_length=1, max_length=20)
    entry_at: Moment | None = None
    exit_at: Moment | None = None


class OverrideRead(BaseModel):
    override_id: uuid.UUID
    session_id: uuid.UUID
    action: OverrideAction
    operator: str
    reason: str
    fee_before: int | None
    fee_after: int | None
    refund_amount: int
    refund_status: str | None = Field(
        description="`refunded`, `refund_failed` (retry by hand) or `payout_required` (paid by"
        " bank transfer: payments has no payout)"
    )
    created_at: datetime


# Receipts and disputes --------------------------------------------------------------------------


class ReceiptRead(BaseModel):
    session_id: uuid.UUID
    lot_id: str
    lot_name: str
    lot_address: str
    plate: str = Field(description="Masked: province, series and the last two digits")
    vehicle_type: VehicleType
    entry_at: datetime = Field(description="Hanoi local time")
    exit_at: datetime
    duration_minutes: int
    lines: list[PriceLineRead] = Field(description="The tariff rules applied, line by line")
    fee: int
    paid_amount: int
    refunded_amount: int
    currency: Literal["VND"] = "VND"
    settlement: Settlement
    payment_reference: str | None = Field(
        description="VietQR reference, or the ledger transfer id of a wallet payment"
    )
    debt_status: DebtStatus | None
    amount_due: int = Field(description="What is still owed (a debt), VND")
    payment: PaymentQR | None = Field(description="How to pay what is owed")
    receipt_code: str = Field(description="Printed on the receipt; with the plate it finds it")


class ReceiptFound(ReceiptRead):
    read_token: str = Field(
        description=(
            "Opens this receipt again (`GET /v1/receipts/{session_id}?token=…`) and nothing"
            " else: disputes need the receipt token shown at the exit"
        )
    )


class DisputeReason(StrEnum):
    wrong_plate = "wrong_plate"
    wrong_times = "wrong_times"
    other = "other"


class DisputeStatus(StrEnum):
    open = "open"
    accepted = "accepted"
    rejected = "rejected"


class DisputeCreate(StrictRequest):
    reason: DisputeReason
    detail: Text = Field(min_length=3, max_length=1000)
    claimed_entry_at: Moment | None = None
    claimed_exit_at: Moment | None = None


class DisputeResolve(StrictRequest):
    outcome: Literal["accepted", "rejected"]
    operator: OperatorName
    note: Reason
    entry_at: Moment | None = Field(
        default=None, description="Accepted `wrong_times`: the corrected entry (default: claim)"
    )
    exit_at: Moment | None = Field(
        default=None, description="Accepted `wrong_times`: the corrected exit (default: claim)"
    )


class DisputeRead(BaseModel):
    dispute_id: uuid.UUID
    session_id: uuid.UUID
    status: DisputeStatus
    reason: DisputeReason
    detail: str
    claimed_entry_at: datetime | None
    claimed_exit_at: datetime | None
    created_at: datetime
    resolved_at: datetime | None
    resolution_note: str | None
    override: OverrideRead | None
