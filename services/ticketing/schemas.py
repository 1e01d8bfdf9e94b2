"""Request and response models of the ticketing API. Amounts are whole VND, times are UTC."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt

from shared.fields import Text


class RiderCategory(StrEnum):
    regular = "regular"
    student = "student"
    worker = "worker"
    elderly = "elderly"  # 60 and over
    child = "child"  # under 6
    merit = "merit"  # people with merit
    disabled = "disabled"
    poor_household = "poor_household"


class ProductKind(StrEnum):
    single = "single"
    pass_ = "pass"
    stored_value = "stored_value"


class Mode(StrEnum):
    bus = "bus"
    metro = "metro"
    any = "any"


class CategoryStatus(StrEnum):
    none = "none"  # regular riders: nothing to approve
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class DeviceStatus(StrEnum):
    active = "active"
    revoked = "revoked"


class PurchaseStatus(StrEnum):
    pending = "pending"  # recorded, payment not confirmed yet
    completed = "completed"  # paid (or free) and the ticket issued
    failed = "failed"  # refused (e.g. insufficient funds); nothing charged; may be retried
    cancelling = "cancelling"  # no ticket can be issued: being refunded
    cancelled = "cancelled"  # given up; refunded if a charge had gone through


class TicketStatus(StrEnum):
    active = "active"
    expired = "expired"
    revoked = "revoked"


class KeyStatus(StrEnum):
    active = "active"  # signs new credentials
    retiring = "retiring"  # signs nothing; its credentials stay valid until `not_after`
    retired = "retired"  # gates must refuse what it signed


# Vietnamese mobile numbers after the country code: 9 digits, prefixes of the 2018 numbering
# plan (03x, 05x, 07x, 08x, 09x as dialled at home; 095 is unassigned).
_MOBILE = re.compile(r"(?:3[2-9]|5[25689]|7[06-9]|8[1-9]|9[0-46-9])[0-9]{7}")
_PHONE_SEPARATORS = re.compile(r"[\s.()-]")


def normalize_phone(value: str) -> str:
    """E.164 (`+84…`) from the ways people write a Vietnamese mobile number."""
    digits = _PHONE_SEPARATORS.sub("", value)
    if digits.startswith("+84"):
        national = digits[3:]
    elif digits.startswith("84") and len(digits) == 11:
        national = digits[2:]
    elif digits.startswith("0"):
        national = digits[1:]
    else:
        raise ValueError("not a Vietnamese mobile number (e.g. 0912 345 678 or +84912345678)")
    if _MOBILE.fullmatch(national) is None:
        raise ValueError("not a Vietnamese mobile number (e.g. 0912 345 678 or +84912345678)")
    return "+84" + national


Phone = Annotated[
    Text,
    Field(
        min_length=9,
        max_length=20,
        description="A Vietnamese mobile number, any usual form; stored as E.164 (+84…)",
        examples=["0912 345 678"],
    ),
    AfterValidator(normalize_phone),
]
Password = Annotated[Text, Field(min_length=8, max_length=128, examples=["correct horse 42"])]
ProductCode = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Z0-9-]+$")]
LineCode = Annotated[str, Field(min_length=1, max_length=10, pattern=r"^[A-Z0-9]+$")]
Base64Url = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+={0,2}$")]


class StrictRequest(BaseModel):
    """Request bodies refuse unknown fields: a misspelt field must not pass silently."""

    model_config = ConfigDict(extra="forbid")


# Products ---------------------------------------------------------------------------------------


class ProductRead(BaseModel):
    code: str
    name_vi: str
    name_en: str
    mode: Mode
    kind: ProductKind
    price_vnd: int = Field(description="0 for free categories; metro singles priced by distance")
    categories: list[RiderCategory] = Field(description="Rider categories allowed to buy it")
    validity_days: int | None = Field(description="Days of validity from purchase")
    rides: int | None = Field(description="Rides included; null means unlimited within validity")
    lines: list[str] = Field(description="Lines or routes it is valid on; empty means all")
    distance_priced: bool = Field(description="Fare computed at tap-out from the distance")
    line_choice: bool = Field(
        default=False, description="The rider picks one line or route (`line`) when buying"
    )
    credential_code: str = Field(
        description="Short code carried in the signed credential (the QR has little room)"
    )


class NetworkVersionRead(BaseModel):
    id: uuid.UUID
    effective_from: datetime = Field(description="The instant it takes effect (UTC)")
    sha256: str = Field(description="Hex digest of the feed's zip as served by `.../feed`")
    imported_at: datetime
    summary: dict[str, Any] = Field(
        description="What the feed holds: `feed_version`, `currency`, `timezone` and row counts"
    )


class NetworkVersionList(BaseModel):
    versions: list[NetworkVersionRead] = Field(description="Oldest effective first")


class NetworkOperator(BaseModel):
    id: str
    name: str
    url: str


class NetworkLine(BaseModel):
    id: str = Field(description="The line or route code gates and tickets use (`2A`, `32`)")
    name: str
    mode: Mode | None = Field(description="`metro`, `bus`, or null for another GTFS route type")
    operator_id: str


class NetworkStation(BaseModel):
    id: str = Field(description="The station or stop code (`2A-05`)")
    name: str
    lat: float | None
    lon: float | None
    lines: list[str] = Field(description="Lines or routes that call here")


class NetworkRead(BaseModel):
    version_id: uuid.UUID
    effective_from: datetime
    feed_version: str
    currency: str
    timezone: str = Field(description="The fare day's time zone (`agency_timezone`)")
    operators: list[NetworkOperator]
    lines: list[NetworkLine]
    stations: list[NetworkStation]


# Riders and sessions ----------------------------------------------------------------------------


class RiderCreate(StrictRequest):
    phone: Phone
    password: Password
    category: RiderCategory = Field(
        default=RiderCategory.regular,
        description="Requested category; concessions apply once an operator approves them",
    )


class LoginRequest(StrictRequest):
    phone: Phone
    password: Annotated[Text, Field(min_length=1, max_length=128)]


class RefreshRequest(StrictRequest):
    refresh_token: Annotated[Text, Field(min_length=1, max_length=200)]


class RiderRead(BaseModel):
    id: uuid.UUID
    phone: str = Field(description="E.164")
    category: RiderCategory = Field(description="The category in force (what prices apply)")
    requested_category: RiderCategory | None = Field(
        description="A concession waiting for, or refused by, an operator"
    )
    category_status: CategoryStatus
    wallet_account_id: uuid.UUID | None = Field(description="The rider's payments wallet")
    created_at: datetime


class SessionRead(BaseModel):
    access_token: str = Field(description="Send as `Authorization: Bearer …`")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds the access token is valid")
    refresh_token: str = Field(description="Single use: trade it at /v1/sessions/refresh")
    refresh_expires_in: int
    rider: RiderRead


class CategoryRequest(StrictRequest):
    category: RiderCategory


class CategoryDecision(StrictRequest):
    approve: StrictBool
    note: Annotated[Text | None, Field(max_length=200)] = None


# Devices ----------------------------------------------------------------------------------------


class DeviceCreate(StrictRequest):
    public_key: Annotated[
        Base64Url,
        Field(
            min_length=43,
            max_length=44,
            description="The phone's Ed25519 public key: 32 raw bytes, base64url",
            examples=["11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"],
        ),
    ]
    label: Annotated[Text | None, Field(max_length=60, examples=["Pixel 8"])] = None


class DeviceRead(BaseModel):
    id: uuid.UUID
    public_key: str = Field(description="base64url, 32 raw bytes")
    fingerprint: str = Field(description="SHA-256 of the 32 raw public key bytes, hex")
    label: str | None
    status: DeviceStatus
    created_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


# Tickets and purchases --------------------------------------------------------------------------


class TicketRead(BaseModel):
    id: uuid.UUID
    purchase_id: uuid.UUID
    product_code: str
    kind: ProductKind
    mode: Mode
    rider_category: RiderCategory
    rides: int | None = Field(description="Rides included; null means unlimited")
    lines: list[str] = Field(description="Lines or routes; empty means all of `mode`")
    valid_from: datetime
    valid_until: datetime
    status: TicketStatus
    created_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None


class PurchaseCreate(StrictRequest):
    product_code: ProductCode = Field(examples=["METRO-DAY"])
    line: LineCode | None = Field(
        default=None, description="For products with `line_choice`: the line or bus route"
    )


class PurchaseRead(BaseModel):
    id: uuid.UUID
    status: PurchaseStatus
    product_code: str
    line: str | None
    price_vnd: int
    charge_id: uuid.UUID | None = Field(description="The payments charge; null when free")
    refund_id: uuid.UUID | None = Field(description="Set when a cancelled purchase was refunded")
    failure_code: str | None
    ticket: TicketRead | None
    created_at: datetime
    completed_at: datetime | None


class TicketRevoke(StrictRequest):
    reason: Annotated[Text, Field(min_length=1, max_length=200)]


# Credentials and issuer keys --------------------------------------------------------------------


class CredentialRead(BaseModel):
    ticket_id: uuid.UUID
    kid: str = Field(description="The issuer key that signed it (see /v1/keys)")
    credential: str = Field(description="The exact signed credential bytes (CBOR), base64url")
    issuer_signature: str = Field(description="Ed25519 over 'CPCRED1' || credential, base64url")
    valid_from: datetime
    valid_until: datetime
    refresh_at: datetime = Field(description="Fetch a fresh credential after this time")
    device_id: uuid.UUID
    device_fingerprint: str


class IssuerKeyRead(BaseModel):
    kid: str
    algorithm: Literal["Ed25519"] = "Ed25519"
    public_key: str = Field(description="32 raw bytes, base64url")
    status: KeyStatus
    created_at: datetime
    not_after: datetime | None = Field(
        description="Retiring keys: when the last credential they signed expires"
    )
    retired_at: datetime | None


class KeySet(BaseModel):
    keys: list[IssuerKeyRead]


# Wallet -----------------------------------------------------------------------------------------


class WalletRead(BaseModel):
    account_id: uuid.UUID
    balance: int = Field(description="Available balance in VND")
    currency: Literal["VND"] = "VND"


class TopupCreate(StrictRequest):
    amount: Annotated[StrictInt, Field(ge=10_000, le=10_000_000, examples=[100_000])]


class TopupRead(BaseModel):
    id: uuid.UUID
    reference: str
    amount: int
    currency: Literal["VND"] = "VND"
    status: Literal["pending", "paid"]
    qr: str = Field(description="The VietQR payload: pay it from any Vietnamese bank app")
    created_at: datetime
    paid_at: datetime | None
