"""Vietnamese plates as cameras and people write them (pure, no servers)."""

from __future__ import annotations

import pytest

from services.parking.plates import InvalidPlate, PlateKind, normalise


class TestNormalise:
    @pytest.mark.parametrize(
        ("raw", "display", "kind"),
        [
            ("29A-123.45", "29A-123.45", PlateKind.CAR),
            ("29a12345", "29A-123.45", PlateKind.CAR),
            ("29 A 123 45", "29A-123.45", PlateKind.CAR),
            ("30K-1234", "30K-1234", PlateKind.CAR),
            ("30LD-123.45", "30LD-123.45", PlateKind.CAR),
            ("29-B1 234.56", "29-B1 234.56", PlateKind.MOTORBIKE),
            ("29B123456", "29-B1 234.56", PlateKind.MOTORBIKE),
            ("29B1-234.56", "29-B1 234.56", PlateKind.MOTORBIKE),
            ("29-B1 2345", "29-B1 2345", PlateKind.MOTORBIKE),
            ("29-AA 123.45", "29-AA 123.45", PlateKind.MOTORBIKE),
            ("29-MĐ1 234.56", "29-MĐ1 234.56", PlateKind.MOTORBIKE),
        ],
    )
    def test_reads_are_normalised_to_the_written_form(
        self, raw: str, display: str, kind: PlateKind
    ) -> None:
        plate = normalise(raw)
        assert (plate.display, plate.kind) == (display, kind)

    def test_every_read_of_one_plate_has_the_same_key(self) -> None:
        keys = {
            normalise(raw).key for raw in ("29A-123.45", "29a12345", " 29A 123.45 ", "29A123.45")
        }
        assert keys == {"29A12345"}

    def test_d_with_stroke_and_d_share_a_key(self) -> None:
        assert normalise("29-MĐ1 234.56").key == normalise("29-MD1 234.56").key

    @pytest.mark.parametrize(
        "raw",
        [
            "",
            "ABC",
            "29A-12",
            "2A-12345",
            "00A-123.45",
            "29O-123.45",
            "29I-123.45",
            "29A-1234567",
            "29A-12a45",
            "29A1-23",
            "29-B1 234.567",
            "x" * 21,
        ],
    )
    def test_malformed_reads_are_refused(self, raw: str) -> None:
        with pytest.raises(InvalidPlate):
            normalise(raw)

    def test_masked_plate_keeps_province_series_and_last_two_digits(self) -> None:
        assert normalise("29A-123.45").masked() == "29A-***.45"
        assert normalise("29-B1 234.56").masked() == "29-B1 ***.56"
