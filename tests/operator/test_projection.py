"""What each producer's event means to the console (pure: projection.py)."""

from __future__ import annotations

import uuid

import pytest

from services.operator.projection import (
    KNOWN,
    Bucket,
    Category,
    EventRefused,
    Increment,
    Latest,
    read_fact,
    tail_entry,
    updates,
)
from services.parking import events as parking_events
from services.payments import events as payments_events
from services.payments.repository.balances import Leg
from services.payments.repository.journal import TransferDraft
from services.ticketing import events as ticketing_events
from shared import events as shared_events
from shared.events import SESSION_OPENED, TICKET_REVOKED, Event
from tests.operator.conftest import validation_event


def increments(event: Event, topic: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for item in updates(read_fact(event, topic)).items:
        if isinstance(item, Increment) and item.bucket is Bucket.day:
            found[item.field] = found.get(item.field, 0) + item.amount
    return found


class TestReadFact:
    def test_a_validation_is_placed_at_its_station_and_decision_time(self) -> None:
        event = validation_event(station="2A-01", gate_id="2A-01-EN", decided_at=1_795_000_000.0)
        fact = read_fact(event, "transit.validations")
        assert fact.category is Category.validation
        assert (fact.place, fact.gate_id, fact.decision) == ("2A-01", "2A-01-EN", "accept")
        assert fact.at == 1_795_000_000.0

    def test_an_unknown_type_is_refused(self) -> None:
        event = Event(
            type="citypass.transit.validation.maybe.v1", source="/x", subject="s", data={}
        )
        with pytest.raises(EventRefused) as refused:
            read_fact(event, "transit.validations")
        assert refused.value.code == "unknown_type"

    def test_a_known_type_without_its_fields_is_refused(self) -> None:
        event = Event(
            type="citypass.transit.validation.accepted.v1", source="/x", subject="s", data={"a": 1}
        )
        with pytest.raises(EventRefused) as refused:
            read_fact(event, "transit.validations")
        assert refused.value.code == "malformed_payload"

    def test_an_alert_shaped_event_of_a_new_kind_is_accepted_on_ops_alerts(self) -> None:
        event = Event(
            type="citypass.parking.camera.offline.v1",
            source="/citypass/parking",
            subject="cam-7",
            data={"severity": "warning", "code": "camera_offline", "detail": "Camera 7 is down"},
        )
        assert read_fact(event, "ops.alerts").category is Category.alert
        with pytest.raises(EventRefused):
            read_fact(event, "parking.sessions")


class TestUpdates:
    def _transfer(self, kind: str, amount: int, source: str | None) -> Event:
        return payments_events.transfer_posted(
            TransferDraft(
                id=uuid.uuid4(),
                kind=kind,
                amount=amount,
                debit=Leg(uuid.uuid4(), ("rider_wallet",)),
                credit=Leg(uuid.uuid4(), ("parking_revenue",)),
                source=source,
                lot_id="HK-02" if source == "parking" else None,
            )
        )

    def test_revenue_counts_charges_captures_and_payments_minus_refunds(self) -> None:
        assert increments(self._transfer("charge", 9_000, "transit"), "payments.ledger") == {
            "rev|transit": 9_000
        }
        assert increments(self._transfer("capture", 25_000, "parking"), "payments.ledger") == {
            "rev|parking": 25_000,
            "rev|parking|HK-02": 25_000,
        }
        assert increments(self._transfer("refund", 9_000, "transit"), "payments.ledger") == {
            "rev|transit": -9_000
        }
        assert increments(self._transfer("hold", 50_000, "parking"), "payments.ledger") == {}
        assert increments(self._transfer("suspense", 7_000, None), "payments.ledger") == {
            "money|suspense": 7_000
        }

    def test_a_validation_updates_its_gate_and_counts_its_reason(self) -> None:
        event = validation_event(
            station="3-04", gate_id="3-04-EN", accepted=False, reason="qr_expired"
        )
        fact = read_fact(event, "transit.validations")
        items = updates(fact).items
        assert {"v|3-04|rejected", "v|*|rejected", "r|qr_expired"} <= {
            i.field for i in items if isinstance(i, Increment)
        }
        [gate] = [i for i in items if isinstance(i, Latest)]
        assert gate.field == "3-04-EN"
        assert gate.value["last_reason"] == "qr_expired"

    def test_a_parking_entry_shows_its_masked_plate_in_the_tail(self) -> None:
        event = parking_events.session_event(
            SESSION_OPENED,
            uuid.uuid4(),
            {"lot_id": "HK-01", "plate": "29A-***.45", "vehicle_type": "car"},
        )
        entry = tail_entry(read_fact(event, "parking.sessions"))
        assert (entry["plate"], entry["lot_id"], entry["category"]) == (
            "29A-***.45",
            "HK-01",
            "parking",
        )

    def test_ticket_events_are_known(self) -> None:
        event = Event(
            type=TICKET_REVOKED,
            source=ticketing_events.SOURCE,
            subject="t",
            data={"ticket_id": str(uuid.uuid4()), "reason": "refunded"},
        )
        assert read_fact(event, "transit.tickets").category is Category.ticket


class TestProducersContract:
    def test_every_event_type_of_the_catalogue_is_known(self) -> None:
        """A new event type in shared/events.py must be taught to the console (or it is
        dead-lettered there)."""
        known = {t for types in KNOWN.values() for t in types}
        named = {
            value
            for name, value in vars(shared_events).items()
            if name.isupper()
            and isinstance(value, str)
            and value.startswith("citypass.")
            and name != "TYPE_PREFIX"
        }
        assert len(named) >= 20
        assert named - known == set()
