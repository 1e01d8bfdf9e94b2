from __future__ import annotations

import pytest

from citypass.parking import _show

QR = "00020101021238570010A000000727012700069704360113001100424242402089QRIBFTTA53037045404800058"


class TestLaneDisplay:
    def test_a_pay_decision_shows_the_vietqr_to_pay(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        _show(
            {
                "decision": "pay",
                "reason": "payment_required",
                "session_id": "s-1",
                "fee": 8000,
                "payment": {"qr": QR, "amount": 8000, "reference": "CP1"},
            }
        )
        shown = capsys.readouterr().out
        assert "PAY  (payment_required)" in shown
        assert f'citypass bank pay "{QR}"' in shown

    def test_an_open_barrier_shows_no_vietqr(self, capsys: pytest.CaptureFixture[str]) -> None:
        _show({"decision": "open", "reason": "paid_by_vietqr", "payment": {"qr": QR}})
        assert "bank pay" not in capsys.readouterr().out

    def test_an_open_barrier_shows_the_receipt_code_and_the_drivers_receipt(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        _show(
            {
                "decision": "open",
                "reason": "free",
                "session_id": "s-1",
                "receipt_token": "VcJkSNqBzcLO-6b-g1ynXg",
                "receipt_code": "K7QMD-3XRW9",
            }
        )
        shown = capsys.readouterr().out
        assert "receipt code: K7QMD-3XRW9" in shown
        assert "/v1/receipts/s-1?token=VcJkSNqBzcLO-6b-g1ynXg" in shown
