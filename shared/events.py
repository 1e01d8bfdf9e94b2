"""CloudEvents 1.0 in Kafka binary mode: JSON payload as the value, attributes as ce_* headers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils

from shared.logging import request_id_var

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
TYPE_PREFIX = "citypass."


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
