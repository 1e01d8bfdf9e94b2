"""Identifiers and the clock, the same in every service: UUIDv7 ids (time-ordered, so that new
rows land at the end of their index) and timezone-aware UTC times."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import uuid_utils


def new_id() -> uuid.UUID:
    return uuid.UUID(str(uuid_utils.uuid7()))


def utcnow() -> datetime:
    return datetime.now(UTC)
