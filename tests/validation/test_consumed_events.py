"""The events validation consumes, read as typed models: a usable field is read, an unusable
one is ignored like a missing one (a producer's mistake in one field loses only that field)."""

from __future__ import annotations

import uuid

from services.validation import events


class TestTicketIssued:
    def test_usable_fields_are_read(self) -> None:
        ticket_id = uuid.uuid4()
        issued = events.TicketIssued.model_validate(
            {
                "ticket_id": str(ticket_id).upper(),
                "kind": "stored_value",
                "rides": 3,
                "credential_product": "SV",
                "valid_until_unix": 1_900_000_000,
                "price": 10_000,  # a field validation does not read
            }
        )
        assert (issued.ticket_id, issued.kind, issued.rides) == (ticket_id, "stored_value", 3)
        assert (issued.credential_product, issued.valid_until_unix) == ("SV", 1_900_000_000)

    def test_unusable_fields_are_ignored_like_missing_ones(self) -> None:
        issued = events.TicketIssued.model_validate(
            {"ticket_id": "not-a-uuid", "kind": "trip", "rides": True, "product_code": 7}
        )
        assert (issued.ticket_id, issued.rides, issued.product_code) == (None, None, None)
        assert issued.kind == "trip"


class TestDecided:
    def test_an_exit_names_its_entry(self) -> None:
        decided = events.Decided.model_validate(
            {
                "ticket_id": "t",
                "validation_id": "v2",
                "action": "exit",
                "fare": 7000,
                "entry": {"validation_id": "v1", "station": "2A-02"},
            }
        )
        assert decided.entry is not None
        assert (decided.entry.validation_id, decided.fare) == ("v1", 7000)
