"""Each alert rule fires on a crafted sequence of events and stays silent on normal traffic.

Pure: the events are built with the producers' own constructors, read as facts and run
through alerts.py with windows and memory kept in dicts, the way the consumer keeps them in
Redis (see `Replay`)."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import UTC, datetime

from services.operator.alerts import (
    Alert,
    GateSeen,
    Rule,
    Thresholds,
    alert_from_fact,
    evaluate,
    memory_keys,
    min_travel_seconds,
    silent_gates,
    windows,
)
from services.operator.projection import Fact, read_fact
from services.operator.service import thresholds
from services.operator.settings import OperatorSettings
from services.parking import events as parking_events
from services.parking.occupancy import Count
from services.parking.tariffs import VehicleType
from services.payments import events as payments_events
from services.validation import events as validation_events
from shared.events import SESSION_CLOSED, Event
from shared.fares.feed import read_feed
from shared.fares.lines import NetworkMap
from tests.operator.conftest import validation_event

T0 = 1_795_000_000.0  # a Sunday morning in Hanoi, 2026
TH = thresholds(OperatorSettings())
HANOI = NetworkMap.of(read_feed())  # stations and distances from Hanoi's feed


class Replay:
    """The consumer's rule loop with dicts for Redis: windows count the events within their
    span up to the newest one; memory expires by event time."""

    def __init__(self, th: Thresholds = TH) -> None:
        self.th = th
        self.windows: dict[str, dict[str, float]] = {}
        self.memory: dict[str, tuple[str, float]] = {}  # key → (value, expires at)

    def feed(self, event: Event, topic: str = "transit.validations") -> list[Alert]:
        fact = read_fact(event, topic)
        return self.feed_fact(fact)

    def feed_fact(self, fact: Fact) -> list[Alert]:
        counts = {}
        for window in windows(fact, self.th):
            members = self.windows.setdefault(window.key, {})
            members[fact.id] = fact.at
            newest = max(members.values())
            counts[window.key] = sum(
                1 for at in members.values() if newest - window.seconds <= at <= newest
            )
        memory = {
            key: value
            for key in memory_keys(fact, HANOI)
            if (kept := self.memory.get(key)) and kept[1] > fact.at
            for value in (kept[0],)
        }
        verdict = evaluate(fact, counts, memory, self.th, HANOI)
        for key, (value, ttl) in verdict.remember.items():
            self.memory[key] = (value, fact.at + ttl)
        return verdict.alerts

    def run(self, events: list[tuple[Event, str]]) -> list[Alert]:
        return [alert for event, topic in events for alert in self.feed(event, topic)]


def at(event: Event, unix_s: float) -> Event:
    return dataclasses.replace(event, time=datetime.fromtimestamp(unix_s, UTC))


def replayed(gate: str, when: float) -> Event:
    return validation_event(
        gate_id=gate, station="2A-03", accepted=False, reason="replayed", decided_at=when
    )


class TestReplayBurst:
    def test_fires_at_the_fifth_replay_within_a_minute_at_one_gate(self) -> None:
        replay = Replay()
        alerts = [replay.feed(replayed("2A-03-EN", T0 + i * 10)) for i in range(5)]
        assert [len(a) for a in alerts] == [0, 0, 0, 0, 1]
        [alert] = alerts[-1]
        assert alert.rule is Rule.replay_burst
        assert alert.subject == "2A-03-EN"
        assert alert.params["count"] == 5

    def test_fires_once_per_cooldown(self) -> None:
        replay = Replay()
        alerts = [a for i in range(30) for a in replay.feed(replayed("2A-03-EN", T0 + i * 5))]
        assert len(alerts) == 1

    def test_fires_when_the_burst_arrives_out_of_order(self) -> None:
        replay = Replay()
        times = [T0 + 40, T0, T0 + 30, T0 + 10, T0 + 20]
        assert len([a for t in times for a in replay.feed(replayed("2A-03-EN", t))]) == 1

    def test_silent_for_replays_spread_out_or_over_several_gates(self) -> None:
        spread = Replay().run(
            [(replayed("2A-03-EN", T0 + i * 70), "transit.validations") for i in range(10)]
        )
        gates = Replay().run(
            [(replayed(f"2A-03-{i}", T0 + i), "transit.validations") for i in range(10)]
        )
        assert spread == []
        assert gates == []


class TestImpossibleTravel:
    def test_fires_for_one_ticket_at_both_ends_of_a_line_a_minute_apart(self) -> None:
        ticket = str(uuid.uuid4())
        replay = Replay()
        first = replay.feed(
            validation_event(ticket_id=ticket, station="2A-01", gate_id="2A-01-EN", decided_at=T0)
        )
        second = replay.feed(
            validation_event(
                ticket_id=ticket,
                station="2A-12",
                gate_id="2A-12-EX",
                decided_at=T0 + 60,
                action="exit",
            )
        )
        assert first == []
        [alert] = second
        assert alert.rule is Rule.impossible_travel
        assert alert.params["from_station"] == "2A-01"
        assert alert.params["to_station"] == "2A-12"
        assert alert.params["min_seconds"] == min_travel_seconds(HANOI, "2A-01", "2A-12")
        assert alert.params["min_seconds"] == 1_170  # 13 km along 2A in the feed, at 40 km/h

    def test_fires_across_lines_and_for_late_offline_uploads(self) -> None:
        ticket = str(uuid.uuid4())
        replay = Replay()
        replay.feed(
            validation_event(
                ticket_id=ticket, station="3-08", gate_id="3-08-EN", decided_at=T0 + 100
            )
        )
        late = replay.feed(
            validation_event(
                ticket_id=ticket, station="2A-01", gate_id="2A-01-EN", decided_at=T0 + 70
            )
        )
        assert [a.rule for a in late] == [Rule.impossible_travel]
        assert late[0].params["from_station"] == "2A-01"  # in the order they happened

    def test_silent_for_real_trips_and_same_station_taps(self) -> None:
        ticket = str(uuid.uuid4())
        needed = min_travel_seconds(HANOI, "2A-01", "2A-12")
        events = [
            validation_event(ticket_id=ticket, station="2A-01", gate_id="2A-01-EN", decided_at=T0),
            validation_event(
                ticket_id=ticket,
                station="2A-01",
                gate_id="2A-01-EX",
                decided_at=T0 + 20,
                action="exit",
            ),
            validation_event(
                ticket_id=ticket, station="2A-01", gate_id="2A-01-EN", decided_at=T0 + 600
            ),
            validation_event(
                ticket_id=ticket,
                station="2A-12",
                gate_id="2A-12-EX",
                decided_at=T0 + 600 + needed,
                action="exit",
            ),
        ]
        assert Replay().run([(e, "transit.validations") for e in events]) == []


class TestPassback:
    def test_fires_when_a_ticket_tries_to_enter_twice_while_inside(self) -> None:
        ticket = str(uuid.uuid4())
        replay = Replay()
        attempts = [
            replay.feed(
                validation_event(
                    ticket_id=ticket,
                    station="2A-04",
                    gate_id="2A-04-EN",
                    accepted=False,
                    reason="already_inside",
                    decided_at=T0 + i * 30,
                )
            )
            for i in range(3)
        ]
        assert [len(a) for a in attempts] == [0, 1, 0]
        assert attempts[1][0].rule is Rule.passback
        assert attempts[1][0].ticket_id == ticket

    def test_silent_for_one_retry_per_ticket(self) -> None:
        events = [
            validation_event(
                station="2A-04",
                gate_id="2A-04-EN",
                accepted=False,
                reason="already_inside",
                decided_at=T0 + i,
            )
            for i in range(20)
        ]
        assert Replay().run([(e, "transit.validations") for e in events]) == []


class TestGateSilent:
    def test_fires_once_for_a_gate_silent_longer_than_the_threshold(self) -> None:
        gates = [GateSeen("2A-01-EN", T0, "2A-01"), GateSeen("2A-02-EN", T0 + 600, "2A-02")]
        now = T0 + TH.gate_silent_s + 1
        first = silent_gates(gates, {}, now, TH)
        assert [a.subject for a in first.alerts] == ["2A-01-EN"]
        assert first.alerts[0].rule is Rule.gate_silent
        memory = {key: value for key, (value, _) in first.remember.items()}
        later = silent_gates(gates, memory, now + 600, TH)
        assert [a.subject for a in later.alerts] == ["2A-02-EN"]  # 2A-01-EN is not raised twice

    def test_fires_again_after_the_gate_came_back_and_fell_silent_again(self) -> None:
        first = silent_gates([GateSeen("G", T0)], {}, T0 + TH.gate_silent_s + 1, TH)
        memory = {key: value for key, (value, _) in first.remember.items()}
        back = GateSeen("G", T0 + 3600)
        assert silent_gates([back], memory, T0 + 3600 + 60, TH).alerts == []
        again = silent_gates([back], memory, T0 + 3600 + TH.gate_silent_s + 1, TH)
        assert len(again.alerts) == 1
        assert again.alerts[0].alert_id != first.alerts[0].alert_id


def occupancy(lot: str, occupied: int, capacity: int, sequence: int, when: float) -> Event:
    event = parking_events.occupancy_changed(
        lot,
        VehicleType.CAR,
        Count(True, occupied, capacity, sequence),
        change=1,
        session_id=uuid.uuid4(),
        at=datetime.fromtimestamp(when, UTC),
    )
    return at(event, when)


class TestLotFull:
    def test_fires_when_the_last_space_is_taken_and_again_only_after_it_freed(self) -> None:
        replay = Replay()
        steps = [(38, 1), (39, 2), (40, 3), (40, 4), (39, 5), (40, 6)]
        alerts = [
            replay.feed(occupancy("HK-01", n, 40, seq, T0 + seq), "parking.occupancy")
            for n, seq in steps
        ]
        assert [len(a) for a in alerts] == [0, 0, 1, 0, 0, 1]
        assert alerts[2][0].rule is Rule.lot_full
        assert alerts[2][0].lot_id == "HK-01"

    def test_a_late_older_count_changes_nothing(self) -> None:
        replay = Replay()
        replay.feed(occupancy("HK-01", 40, 40, 10, T0), "parking.occupancy")
        assert replay.feed(occupancy("HK-01", 39, 40, 9, T0 + 1), "parking.occupancy") == []
        assert replay.feed(occupancy("HK-01", 40, 40, 11, T0 + 2), "parking.occupancy") == []

    def test_a_refused_entry_means_full(self) -> None:
        refused = parking_events.entry_refused(
            "BD-01", "BD-01-IN-1", VehicleType.MOTORBIKE, Count(False, 200, 200, 7), "29A-***.45"
        )
        [alert] = Replay().feed(refused, "parking.occupancy")
        assert alert.rule is Rule.lot_full

    def test_silent_while_spaces_remain(self) -> None:
        events = [
            (occupancy("HK-02", 30 + (i % 5), 40, i, T0 + i), "parking.occupancy")
            for i in range(50)
        ]
        assert Replay().run(events) == []


def unpaid(when: float) -> Event:
    event = validation_events.fare_unpaid(
        ticket_id=str(uuid.uuid4()),
        wallet_account_id=str(uuid.uuid4()),
        validation_id=str(uuid.uuid4()),
        amount=12_000,
        shortfall=4_000,
    )
    return at(event, when)


def parking_closed(settlement: str, when: float) -> Event:
    event = parking_events.session_event(
        SESSION_CLOSED,
        uuid.uuid4(),
        {"lot_id": "HK-01", "plate": "30A-***.12", "fee": 25_000, "settlement": settlement},
    )
    return at(event, when)


class TestPaymentFailures:
    def test_fires_on_a_spike_of_unpaid_fares_and_parking_debts(self) -> None:
        events = [
            (unpaid(T0 + i * 10), "transit.tickets") for i in range(TH.payment_failure_count - 2)
        ]
        events += [(parking_closed("debt", T0 + 100 + i), "parking.sessions") for i in range(2)]
        alerts = Replay().run(events)
        assert [a.rule for a in alerts] == [Rule.payment_failures]

    def test_silent_for_a_few_failures_and_paid_sessions(self) -> None:
        events = [(unpaid(T0 + i * 60), "transit.tickets") for i in range(TH.payment_failure_count)]
        events += [(parking_closed("wallet", T0 + i), "parking.sessions") for i in range(50)]
        assert Replay().run(events) == []


class TestOtherServicesAlerts:
    def test_money_in_suspense_from_payments(self) -> None:
        event = payments_events.notification_unmatched(
            bank_transaction_id="FT2611220001",
            cause="amount_mismatch",
            amount=30_000,
            reference="CP9F3K2",
            expected_amount=25_000,
            payment_request_id=uuid.uuid4(),
            suspense_transfer_id=uuid.uuid4(),
            detail="Paid 30,000 VND for a 25,000 VND request.",
        )
        record = alert_from_fact(read_fact(event, "ops.alerts"))
        assert record is not None
        assert record["rule"] == "suspense"
        assert record["subject"] == "FT2611220001"
        assert record["params"]["amount"] == 30_000
        assert record["alert_id"] == event.id

    def test_offline_double_use_from_validation(self) -> None:
        event = validation_events.duplicate_use(
            ticket_id="7d1f0c1e-3c59-4a37-9a43-5d6f0b0f8a11",
            qr_at=int(T0),
            counter=4,
            uses=[
                {"gate_id": "3-01-EN", "validation_id": "a"},
                {"gate_id": "3-02-EN", "validation_id": "b"},
            ],
            detail="One dynamic QR was accepted at 2 gates.",
        )
        record = alert_from_fact(read_fact(event, "ops.alerts"))
        assert record is not None
        assert record["rule"] == "offline_double_use"
        assert record["params"]["gates"] == ["3-01-EN", "3-02-EN"]
        assert record["ticket_id"] == "7d1f0c1e-3c59-4a37-9a43-5d6f0b0f8a11"

    def test_events_that_are_not_alerts_carry_none(self) -> None:
        assert alert_from_fact(read_fact(validation_event(), "transit.validations")) is None


class TestNormalTraffic:
    def test_a_busy_morning_raises_nothing(self) -> None:
        """Riders entering and leaving at realistic speeds, a few benign rejections (expired
        QR, one retry while inside), the odd replay, some unpaid fares, lots filling up."""
        rng = random.Random(20261122)
        stations = {line.code: [s.code for s in line.stations] for line in HANOI.lines}
        events: list[tuple[Event, str]] = []
        for rider in range(400):
            line = rng.choice(list(stations))
            entry, exit_ = rng.sample(stations[line], 2)
            start = T0 + rng.uniform(0, 3 * 3600)
            ride = min_travel_seconds(HANOI, entry, exit_) + rng.uniform(30, 600)
            ticket = str(uuid.uuid4())
            events.append(
                (
                    validation_event(
                        ticket_id=ticket, station=entry, gate_id=f"{entry}-EN", decided_at=start
                    ),
                    "transit.validations",
                )
            )
            if rider % 25 == 0:
                events.append(
                    (
                        validation_event(
                            ticket_id=ticket,
                            station=entry,
                            gate_id=f"{entry}-EN",
                            accepted=False,
                            reason="already_inside",
                            decided_at=start + 5,
                        ),
                        "transit.validations",
                    )
                )
            if rider % 10 == 0:
                events.append(
                    (
                        validation_event(
                            station=entry,
                            gate_id=f"{entry}-EN",
                            accepted=False,
                            reason="qr_expired",
                            decided_at=start + 2,
                        ),
                        "transit.validations",
                    )
                )
            if rider % 40 == 0:
                events.append((replayed(f"{entry}-EN", start + 3), "transit.validations"))
            events.append(
                (
                    validation_event(
                        ticket_id=ticket,
                        station=exit_,
                        gate_id=f"{exit_}-EX",
                        decided_at=start + ride,
                        action="exit",
                    ),
                    "transit.validations",
                )
            )
        events += [(unpaid(T0 + i * 400), "transit.tickets") for i in range(25)]
        events += [
            (occupancy("HK-01", 100 + i, 300, i, T0 + i * 30), "parking.occupancy")
            for i in range(150)
        ]
        events.sort(key=lambda pair: read_fact(pair[0], pair[1]).at)
        assert Replay().run(events) == []
