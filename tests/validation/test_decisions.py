"""The gate's answer and the relay's event come from the same (context, reply): they agree, and
an event rebuilt after a crash is the same event (id and bytes), so consumers can deduplicate."""

from __future__ import annotations

import uuid

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.validation import decisions
from services.validation.repository import parse_outcome
from services.validation.rules import Direction, GatePlace
from tests.validation.conftest import HANOI_FARES, HANOI_NETWORKS

OUTCOMES = ("ok", "replayed", "no_rides_left", "already_inside", "not_inside", "qr_expired")
GATES = (
    GatePlace("2A-05-EX", "2A-05", None, Direction.exit),
    GatePlace("3-02-EN", "3-02", None, Direction.entry),
    GatePlace("BUS-32", None, "32", Direction.both),
)


@st.composite
def decided(draw: st.DrawFn) -> tuple[dict[str, object], str]:
    gate = draw(st.sampled_from(GATES))
    ctx = decisions.context(
        str(uuid.uuid4()), 1_800_000_000, 1_799_999_990, gate, HANOI_FARES, detail=None
    )
    ctx.update(ticket=str(uuid.uuid4()), product="METRO-DAY", category="regular")
    ctx.update(qr_at=1_799_999_985, counter=draw(st.integers(0, 10**6)))
    outcome = draw(st.sampled_from(OUTCOMES))
    if outcome == "qr_expired" or draw(st.booleans()):
        return ctx, outcome  # decided before the ticket's state was read
    action = draw(st.sampled_from(("entry", "exit", "tap")))
    kind = draw(st.sampled_from(("pass", "single", "stored_value")))
    closed = "|".join((str(uuid.uuid4()), "2A-01", "1799999000")) if action == "exit" else "||"
    auto = draw(st.sampled_from(("||", f"{uuid.uuid4()}|3-01|1799980000")))
    rides = draw(st.sampled_from(("", "0", "3")))
    balance = draw(st.sampled_from(("", "12000")))
    return ctx, f"{outcome}|{action}|{kind}|{rides}|wallet-1|{balance}|{closed}|{auto}"


class TestOneSourceForAnswerAndEvent:
    @given(decided())
    def test_the_event_says_what_the_gate_heard(self, case: tuple[dict[str, object], str]) -> None:
        ctx, reply = case
        state = parse_outcome(reply)
        body = decisions.answer(ctx, state, HANOI_FARES)
        data = decisions.event_data(ctx, state, body)
        assert {k: data[k] for k in body} == body

    @given(decided())
    def test_a_rebuilt_event_is_the_same_event(self, case: tuple[dict[str, object], str]) -> None:
        ctx, reply = case
        stored = orjson.dumps(ctx)  # what the script keeps in the stream
        first = decisions.decision_records(HANOI_NETWORKS, orjson.loads(stored), reply)
        again = decisions.decision_records(HANOI_NETWORKS, orjson.loads(stored), reply)
        assert first == again
        _, _, value, headers = first[0]
        assert dict(headers)["ce_id"].decode() == ctx["vid"]
        assert orjson.loads(value)["validation_id"] == ctx["vid"]
