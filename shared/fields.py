"""What every request field accepts as text, instant or day: what PostgreSQL can store and
Python can compute with. Decided here once; every service's schemas use these types.

- `Text`: any Unicode text without NUL (PostgreSQL's text cannot hold U+0000) and without lone
  surrogates (not UTF-8: asyncpg cannot encode them). Anything else is a 422 `validation_error`.
- `KeptText`: for what must be recorded whatever it says (a bank's signed notification): the
  characters PostgreSQL cannot store become U+FFFD (`KeptMoment`: an instant out of range
  becomes null); the raw body is kept beside it.
- `Moment` / `Day`: an instant with an offset, or an ISO day, between 2000 and 2100.
  PostgreSQL holds far more, but a day's window or an offset conversion at 0001-01-01 or
  9999-12-31 leaves Python's datetime range; no CityPass record lies outside this century.
  `Instant`, where a far-off time is meaningful (a gate's clock): any instant that exists in
  UTC with a day's room either side (`0001-01-01T00:00+07:00` does not).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

# Refuses NUL; a pattern also makes pydantic-core read the value as UTF-8, which refuses lone
# surrogates (`string_unicode`). In the OpenAPI description, so clients and fuzzers see it.
STORABLE_PATTERN = r"^[^\x00]*$"
Text = Annotated[str, Field(pattern=STORABLE_PATTERN)]

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # in a Python str, any surrogate is a lone one


def storable(text: str) -> str:
    """`text` with every character PostgreSQL cannot store replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)


KeptText = Annotated[str, AfterValidator(storable)]

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _in_service_range(moment: datetime) -> datetime:
    if not EARLIEST <= moment < LATEST:
        raise ValueError("must lie between 2000 and 2100")
    return moment


def _written_as_iso_day(value: object) -> object:
    # Lax pydantic would read "0" as 1970-01-01 (unix time); a day must look like one.
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


def _day_in_service_range(day: date) -> date:
    if not EARLIEST.date() <= day < LATEST.date():
        raise ValueError("must lie between 2000 and 2100")
    return day


def _representable(moment: datetime) -> datetime:
    try:
        utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment
        _ = (utc - ONE_DAY, utc + ONE_DAY)  # room for a day's arithmetic either way
    except OverflowError:
        raise ValueError("must lie within the years 1 to 9999 in UTC") from None
    return moment


ONE_DAY = timedelta(days=1)
Moment = Annotated[AwareDatetime, AfterValidator(_in_service_range)]
# Where a far-off instant is meaningful (a gate whose clock reset to 1970 still gets a decision,
# on the server's clock): any instant that exists in UTC, with a day's room either side.
Instant = Annotated[datetime, AfterValidator(_representable)]
Day = Annotated[date, BeforeValidator(_written_as_iso_day), AfterValidator(_day_in_service_range)]


def _kept_moment(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment if moment is not None and EARLIEST <= moment < LATEST else None


# For what must be recorded whatever it says: an instant out of range is dropped (None).
KeptMoment = Annotated[datetime | None, AfterValidator(_kept_moment)]
