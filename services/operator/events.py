"""What the operator console publishes and what it consumes.

Publishes on `ops.alerts`, keyed by the alert's subject (gate, ticket, lot, "payments"):
- `citypass.ops.alert.raised.v1`: a rule fired (see alerts.py); the event id is the alert id,
  derived from the rule, the subject and the triggering event, so a redelivery republishes
  the same id and consumers store it once. Data: `alert_id`, `rule`, `severity`, `subject`,
  `detail` (English), `params` (numbers the console localises), `gate_id`, `station`,
  `ticket_id`, `lot_id`, `raised_at`.
- `citypass.ops.alert.acknowledged.v1`: an admin acknowledged an alert (`alert_id`,
  `acknowledged_by`, `acknowledged_at`); the audit trail of who saw what.

Consumes every topic except `ops.deadletter`, in the group `OPERATOR_CONSUMER_GROUP`
(default `operator`), deduplicated by event id: the types listed in `projection.KNOWN`, plus
any alert-shaped event (`code`, `detail`) on `ops.alerts`. Anything else is dead-lettered.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.operator.alerts import Alert
from shared.events import ALERT_ACKNOWLEDGED, ALERT_RAISED, Event

SOURCE = "/citypass/operator"


def alert_raised(alert: Alert) -> Event:
    return Event(
        type=ALERT_RAISED,
        source=SOURCE,
        subject=alert.subject,
        data=alert.record(),
        id=alert.alert_id,
        time=datetime.fromtimestamp(alert.at, UTC),
    )


def alert_acknowledged(alert_id: str, subject: str, by: str, at: datetime) -> Event:
    return Event(
        type=ALERT_ACKNOWLEDGED,
        source=SOURCE,
        subject=subject,
        data={
            "alert_id": alert_id,
            "acknowledged_by": by,
            "acknowledged_at": at.isoformat().replace("+00:00", "Z"),
        },
        time=at,
    )
