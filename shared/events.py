"""CloudEvents 1.0 in Kafka binary mode: JSON payload as the value, attributes as ce_* headers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from shared.logging import request_id_var

# The catalogue: every topic and event type, named here once; producers and consumers import
# these names (partitions and keys: shared.kafka.TOPICS; fields: the producer's events.py).
TICKETS_TOPIC = "transit.tickets"
VALIDATIONS_TOPIC = "transit.validations"
SESSIONS_TOPIC = "parking.sessions"
OCCUPANCY_TOPIC = "parking.occupancy"
LEDGER_TOPIC = "payments.ledger"
ALERTS_TOPIC = "ops.alerts"

# ticketing, on transit.tickets
TICKET_ISSUED = "citypass.transit.ticket.issued.v1"
TICKET_REVOKED = "citypass.transit.ticket.revoked.v1"
DEVICE_REGISTERED = "citypass.transit.device.registered.v1"
DEVICE_REVOKED = "citypass.transit.device.revoked.v1"
ISSUER_KEYS_CHANGED = "citypass.transit.issuer_keys.changed.v1"
# validation, on transit.validations (decisions, trips), transit.tickets (fares), ops.alerts
VALIDATION_ACCEPTED = "citypass.transit.validation.accepted.v1"
VALIDATION_REJECTED = "citypass.transit.validation.rejected.v1"
TRIP_AUTO_CLOSED = "citypass.transit.trip.auto_closed.v1"
FARE_UNPAID = "citypass.transit.fare.unpaid.v1"
FARE_SETTLED = "citypass.transit.fare.settled.v1"
FARE_CHARGED = "citypass.transit.fare.charged.v1"
FARE_REFUNDED = "citypass.transit.fare.refunded.v1"
DUPLICATE_USE = "citypass.transit.validation.duplicate_use.v1"
UPLOAD_TOO_LATE = "citypass.transit.validation.upload_too_late.v1"
# payments, on payments.ledger and ops.alerts
TRANSFER_POSTED = "citypass.payments.transfer.posted.v1"
PAYMENT_REQUEST_PAID = "citypass.payments.payment_request.paid.v1"
NOTIFICATION_UNMATCHED = "citypass.payments.bank_notification.unmatched.v1"
# parking, on parking.sessions and parking.occupancy
SESSION_OPENED = "citypass.parking.session.opened.v1"
SESSION_PAYMENT_REQUIRED = "citypass.parking.session.payment_required.v1"
SESSION_CLOSED = "citypass.parking.session.closed.v1"
SESSION_DEBT_SETTLED = "citypass.parking.session.debt_settled.v1"
SESSION_OVERRIDDEN = "citypass.parking.session.overridden.v1"
SESSION_DISPUTED = "citypass.parking.session.disputed.v1"
SESSION_DISPUTE_RESOLVED = "citypass.parking.session.dispute_resolved.v1"
OCCUPANCY_CHANGED = "citypass.parking.occupancy.changed.v1"
ENTRY_REFUSED = "citypass.parking.entry.refused.v1"
# operator, on ops.alerts
ALERT_RAISED = "citypass.ops.alert.raised.v1"
ALERT_ACKNOWLEDGED = "citypass.ops.alert.acknowledged.v1"

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
TYPE_PREFIX = "citypass."


class Consumed(BaseModel):
    """The data of an event as one consumer reads it: the fields it uses, typed; the others
    ignored (producers may add fields without telling their consumers)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _none_if_invalid(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


# A field a consumer reads when it is usable and otherwise ignores, as the event's other fields:
# `rides: Annotated[StrictInt | None, Lenient] = None`.
Lenient = WrapValidator(_none_if_invalid)


class EnvelopeError(ValueError):
    """A Kafka record that is not a valid CityPass CloudEvent."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def new_event_id() -> str:
    return str(uuid_utils.uuid7())


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    source: str
    subject: str
    data: dict[str, Any]
    id: str = field(default_factory=new_event_id)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    request_id: str | None = field(default_factory=request_id_var.get)

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_time", self.time.isoformat().replace("+00:00", "Z").encode()),
            ("ce_subject", self.subject.encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ]
        if self.request_id:
            headers.append(("ce_requestid", self.request_id.encode()))  # CE extension attribute
        return headers

    def value(self) -> bytes:
        return orjson.dumps(self.data)

    @classmethod
    def from_record(cls, headers: Sequence[tuple[str, bytes]], value: bytes | None) -> Event:
        attrs = {name: raw.decode("utf-8", "replace") for name, raw in headers or ()}
        for required in ("ce_specversion", "ce_id", "ce_source", "ce_type"):
            if not attrs.get(required):
                raise EnvelopeError("missing_attribute", f"header {required} is missing")
        if attrs["ce_specversion"] != SPEC_VERSION:
            raise EnvelopeError("unsupported_specversion", attrs["ce_specversion"])
        try:
            data = orjson.loads(value or b"")
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError("malformed_payload", str(exc)) from exc
        if not isinstance(data, dict):
            raise EnvelopeError("malformed_payload", "payload is not a JSON object")
        try:
            time = datetime.fromisoformat(attrs.get("ce_time", "").replace("Z", "+00:00"))
        except ValueError:
            time = datetime.now(UTC)
        return cls(
            type=attrs["ce_type"],
            source=attrs["ce_source"],
            subject=attrs.get("ce_subject", ""),
            data=data,
            id=attrs["ce_id"],
            time=time,
            request_id=attrs.get("ce_requestid"),
        )
