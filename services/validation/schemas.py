"""Request and response models of the validation API."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from services.validation.rules import Action, Decision, Direction, Reason
from shared.fields import Instant, Text

__all__ = [
    "Action",
    "Decision",
    "Direction",
    "Reason",
]

GateIdField = Annotated[
    str,
    Field(
        min_length=1,
        max_length=40,
        pattern=r"^[A-Za-z0-9-]+$",
        description="The gate's device id, e.g. `2A-01-EN`",
        examples=["2A-01-EN"],
    ),
]
ProductPrefix = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[!-~]+$")]


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StationRead(BaseModel):
    code: str
    name: str
    km: float = Field(description="Distance from the first station of the line")


class LineRead(BaseModel):
    code: str
    name: str
    stations: list[StationRead]


class BusRouteRead(BaseModel):
    code: str
    name: str
    length_km: float
    fare_band: str = Field(description="The fare network that prices it (`networks.txt`)")


class GateRead(BaseModel):
    gate_id: str
    station: str | None = Field(description="Metro station code, for metro gates")
    route: str | None = Field(description="Bus route code, for bus validators")
    direction: Direction
    enabled: bool
    products: list[str] = Field(
        default_factory=list,
        description="Product code prefixes this gate accepts; empty means every product",
    )


class GateCreate(StrictRequest):
    gate_id: GateIdField
    station: Text | None = Field(
        default=None,
        description="A station code from `/v1/lines` (metro gates)",
        examples=["2A-01"],
    )
    route: Text | None = Field(
        default=None,
        description="A route code from `/v1/bus-routes` (bus validators)",
        examples=["09"],
    )
    direction: Direction = Field(
        default=Direction.both,
        description="`entry`, `exit` or `both` (decided by the rider's trip); bus: `both`",
    )
    products: list[ProductPrefix] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if (self.station is None) == (self.route is None):
            raise ValueError("give exactly one of station (metro gate) or route (bus validator)")
        if self.route is not None and self.direction is not Direction.both:
            raise ValueError("a bus validator's direction is `both`")
        return self


class GateUpdate(StrictRequest):
    enabled: StrictBool | None = Field(default=None, description="false stops the gate at once")
    direction: Direction | None = None
    products: list[ProductPrefix] | None = Field(default=None, max_length=20)


class GateProvisioned(GateRead):
    secret: str = Field(
        description="The device secret: store it on the gate (`GET /v1/gates/{gate_id}/secret` "
        "reads it again)"
    )


class GateSecretRead(BaseModel):
    gate_id: str
    secret: str = Field(description="The gate's current device secret")
    previous_valid_until: datetime | None = Field(
        default=None,
        description="Until when the secret this one replaced is still accepted (the rotation's "
        "grace period); null when no replaced secret is accepted any more",
    )


class IssuerKeyStatus(StrEnum):
    """As ticketing's `GET /v1/keys` names them, plus `revoked` for an operator's emergency."""

    active = "active"  # signs new credentials
    retiring = "retiring"  # signs nothing new; its credentials are accepted until not_after
    retired = "retired"  # refused
    revoked = "revoked"  # refused (compromised)


class IssuerKeyPut(StrictRequest):
    public_key: str = Field(
        pattern=r"^[A-Za-z0-9+/_-]{43}=?$",
        description="The raw 32-byte Ed25519 public key, base64 or base64url",
        examples=["11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"],
    )
    status: IssuerKeyStatus = IssuerKeyStatus.active
    not_after: Instant | None = Field(default=None, description="Refused after this instant")

    @field_validator("not_after", mode="before")
    @classmethod
    def _iso_text(cls, value: object) -> object:
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("not_after is an ISO 8601 date-time string")  # not a bare number
        return value


class IssuerKeyRead(BaseModel):
    kid: str
    public_key: str = Field(description="Raw Ed25519 public key, base64url without padding")
    status: IssuerKeyStatus
    not_after: datetime | None
    source: str = Field(description="`ticketing` (polled), `settings` or `operator`")


class ValidationCreate(BaseModel):
    qr: str = Field(
        description=(
            "The scanned text exactly as read (`CP1:` + Base45). Anything that is not a valid "
            "code, of any length, gets a `reject` with reason `malformed`, never an error."
        ),
        examples=[
            "CP1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3/XIV0W23NTDEXWK G2EP4J0B3KL6QM5/OVGA/MAT%ZSAI"
        ],
    )
    gate_id: GateIdField
    scanned_at: Instant = Field(description="When the gate read the code (the gate's clock)")


class ValidationRead(BaseModel):
    validation_id: uuid.UUID = Field(description="UUIDv7; the id of the decision's event")
    decision: Decision
    reason: Reason = Field(description="`ok` for an accept; otherwise why it was refused")
    reason_detail: str | None = Field(
        description="The codec's precise code for `malformed` and signature reasons "
        "(`oversize`, `malformed_base45`, `trailing_bytes`, `missing_device_signature`…)"
    )
    action: Action = Field(description="What an accept did: metro `entry`/`exit` or bus `tap`")
    message_vi: str = Field(description="Short text for the gate display, Vietnamese")
    message_en: str = Field(description="The same in English")
    ticket_id: uuid.UUID | None
    product: str | None
    remaining_rides: int | None = Field(description="Rides left on a ride-limited ticket")
    fare: int | None = Field(description="VND charged to the wallet for this trip (stored value)")
    balance: int | None = Field(description="Wallet balance after the last charged fare, VND")
    gate_id: str
    decided_at: datetime


class OfflineDecision(StrictRequest):
    validation_id: uuid.UUID = Field(description="UUIDv7 the gate gave the decision")
    qr: str = Field(max_length=1000)
    scanned_at: Instant
    decision: Decision
    reason: Reason
    action: Action


class ValidationBatchCreate(StrictRequest):
    gate_id: GateIdField
    decisions: list[OfflineDecision] = Field(min_length=1, max_length=1000)


class BatchStatus(StrEnum):
    recorded = "recorded"
    duplicate = "duplicate"  # uploaded before; nothing happened twice
    # Its QR is older than the upload horizon: reported to operators (an alert), no state
    # changed, no fare charged; the gate may drop it.
    too_late = "too_late"


class BatchItemRead(BaseModel):
    validation_id: uuid.UUID
    status: BatchStatus
    server_reason: Reason = Field(description="What the server's checks say about the code now")
    conflict: bool = Field(description="The same code was accepted at another gate (alerted)")
    fare: int | None


class ValidationBatchRead(BaseModel):
    gate_id: str
    recorded: int
    duplicates: int
    too_late: int = Field(description="Uploaded after the upload horizon (see `status`)")
    conflicts: int
    results: list[BatchItemRead]


class GateBundleRead(BaseModel):
    key_id: str = Field(description="Which bundle key signed it (see `/v1/gate-bundle/key`)")
    payload: str = Field(description="The bundle JSON, base64url without padding")
    signature: str = Field(description="Ed25519 over the payload bytes, base64url")
    valid_until: datetime


class BundleKeyRead(BaseModel):
    key_id: str
    algorithm: str = "Ed25519"
    public_key: str = Field(description="Raw 32-byte public key, base64url without padding")
