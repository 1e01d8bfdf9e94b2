"""Riders: sign-up and login by phone, tokens, concession categories approved by operators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from sqlalchemy import text

from services.ticketing.schemas import normalize_phone
from services.ticketing.settings import TicketingSettings
from shared.db import Database
from tests.ticketing.conftest import (
    OPERATOR,
    approve_category,
    buy,
    fund,
    new_phone,
    scalar,
    sign_up,
)


class TestPhoneNumbers:
    @pytest.mark.parametrize(
        ("written", "e164"),
        [
            ("0912345678", "+84912345678"),
            ("0912 345 678", "+84912345678"),
            ("091.234.5678", "+84912345678"),
            ("+84 912 345 678", "+84912345678"),
            ("84912345678", "+84912345678"),
            ("(+84) 32-123-4567", "+84321234567"),
            ("0862345678", "+84862345678"),
        ],
    )
    def test_usual_forms_become_e164(self, written: str, e164: str) -> None:
        assert normalize_phone(written) == e164

    @pytest.mark.parametrize(
        "written",
        [
            "12345",
            "0951234567",  # 095: no network uses it
            "0212345678",  # a landline area code
            "091234567",  # one digit short
            "09123456789",  # one digit long
            "+1 212 555 0100",
            "+84 0912 345 678",
            "0912-345-67a",
        ],
    )
    def test_malformed_numbers_are_refused(self, written: str) -> None:
        with pytest.raises(ValueError, match="not a Vietnamese mobile number"):
            normalize_phone(written)


class TestSignUp:
    async def test_sign_up_normalises_the_phone_and_stores_an_argon2_hash(
        self, http: httpx.AsyncClient, ticketing_db: Database
    ) -> None:
        national = new_phone()
        spaced = f"{national[:4]} {national[4:7]} {national[7:]}"
        response = await http.post(
            "/v1/riders", json={"phone": spaced, "password": "correct horse 42"}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["rider"]["phone"] == "+84" + national[1:]
        assert body["rider"]["category"] == "regular"
        assert body["rider"]["wallet_account_id"] is not None
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 15 * 60
        stored = await scalar(
            ticketing_db,
            "SELECT password_hash FROM riders WHERE id = :id",
            id=body["rider"]["id"],
        )
        assert stored.startswith("$argon2id$")
        assert "correct horse" not in stored
        login = await http.post(
            "/v1/sessions", json={"phone": national, "password": "correct horse 42"}
        )
        assert login.status_code == 200, login.text
        assert login.json()["rider"]["id"] == body["rider"]["id"]

    @pytest.mark.parametrize(
        "phone", ["12345", "0951234567", "+1 212 555 0100", "0912 345 67", "không có số"]
    )
    async def test_malformed_phone_is_422_and_records_nothing(
        self, http: httpx.AsyncClient, ticketing_db: Database, phone: str
    ) -> None:
        before = await scalar(ticketing_db, "SELECT count(*) FROM riders")
        response = await http.post(
            "/v1/riders", json={"phone": phone, "password": "correct horse 42"}
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "validation_error"
        assert await scalar(ticketing_db, "SELECT count(*) FROM riders") == before

    async def test_a_phone_number_signs_up_once(self, http: httpx.AsyncClient) -> None:
        rider = await sign_up(http)
        again = await http.post(
            "/v1/riders", json={"phone": rider.phone, "password": "another password"}
        )
        assert again.status_code == 409
        assert again.json()["code"] == "phone_taken"

    async def test_short_password_is_refused(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/v1/riders", json={"phone": new_phone(), "password": "short"})
        assert response.status_code == 422


class TestSessions:
    async def test_wrong_password_and_unknown_phone_look_the_same(
        self, http: httpx.AsyncClient
    ) -> None:
        rider = await sign_up(http)
        wrong = await http.post(
            "/v1/sessions", json={"phone": rider.phone, "password": "not the password"}
        )
        unknown = await http.post(
            "/v1/sessions", json={"phone": new_phone(), "password": "not the password"}
        )
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json()["code"] == unknown.json()["code"] == "invalid_credentials"

    async def test_password_guessing_locks_the_number_for_the_window(
        self, http: httpx.AsyncClient, settings: TicketingSettings, ticketing_db: Database
    ) -> None:
        rider = await sign_up(http)
        limit = settings.login_failure_limit

        async def log_in(phone: str, password: str) -> httpx.Response:
            return await http.post("/v1/sessions", json={"phone": phone, "password": password})

        for _ in range(limit - 1):
            assert (await log_in(rider.phone, "guess")).status_code == 401
        # A success before the limit forgets the failures.
        assert (await log_in(rider.phone, rider.password)).status_code == 200
        for _ in range(limit):
            assert (await log_in(rider.phone, "guess")).status_code == 401

        locked = await log_in(rider.phone, rider.password)  # even the right password now

        assert locked.status_code == 429
        assert locked.headers["content-type"] == "application/problem+json"
        assert locked.json()["code"] == "too_many_login_failures"
        window = settings.login_failure_window.total_seconds()
        assert 0 < int(locked.headers["retry-after"]) <= window
        # A number without an account is locked the same way: no hint of which numbers exist.
        stranger = new_phone()
        for _ in range(limit):
            assert (await log_in(stranger, "guess")).status_code == 401
        assert (await log_in(stranger, "guess")).status_code == 429
        # Once the window has passed, the rider logs in again.
        async with ticketing_db.transaction() as session:
            await session.execute(
                text(
                    "UPDATE login_failures"
                    " SET first_failed_at = first_failed_at - make_interval(secs => :seconds)"
                    " WHERE phone = :phone"
                ),
                {"seconds": window, "phone": normalize_phone(rider.phone)},
            )
        assert (await log_in(rider.phone, rider.password)).status_code == 200

    async def test_access_token_is_short_lived_and_checked(
        self, http: httpx.AsyncClient, settings: TicketingSettings
    ) -> None:
        rider = await sign_up(http)
        claims = jwt.decode(rider.access_token, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 15 * 60
        assert (await http.get("/v1/me", headers=rider.auth)).status_code == 200

        secret = settings.jwt_secret.get_secret_value()
        past = datetime.now(UTC) - timedelta(hours=1)
        expired = jwt.encode(
            {**claims, "iat": int(past.timestamp()), "exp": int(past.timestamp()) + 60},
            secret,
            algorithm="HS256",
        )
        forged = jwt.encode(claims, "some other signing key, 32 bytes!", algorithm="HS256")
        cases = {
            None: "missing_token",
            "Bearer not-a-jwt": "invalid_token",
            f"Bearer {expired}": "token_expired",
            f"Bearer {forged}": "invalid_token",
        }
        for header, code in cases.items():
            headers = {"Authorization": header} if header else {}
            response = await http.get("/v1/me", headers=headers)
            assert response.status_code == 401, header
            assert response.json()["code"] == code

    async def test_refresh_rotates_and_a_reused_refresh_token_ends_the_login(
        self, http: httpx.AsyncClient
    ) -> None:
        rider = await sign_up(http)
        first = await http.post("/v1/sessions/refresh", json={"refresh_token": rider.refresh_token})
        assert first.status_code == 200, first.text
        rotated = first.json()["refresh_token"]
        assert rotated != rider.refresh_token
        me = await http.get(
            "/v1/me", headers={"Authorization": f"Bearer {first.json()['access_token']}"}
        )
        assert me.status_code == 200

        stolen = await http.post(
            "/v1/sessions/refresh", json={"refresh_token": rider.refresh_token}
        )
        assert stolen.status_code == 401
        assert stolen.json()["code"] == "refresh_token_reused"
        after = await http.post("/v1/sessions/refresh", json={"refresh_token": rotated})
        assert after.status_code == 401  # the whole family was revoked
        assert after.json()["code"] == "invalid_refresh_token"

    async def test_logout_revokes_the_refresh_token(self, http: httpx.AsyncClient) -> None:
        rider = await sign_up(http)
        out = await http.post("/v1/sessions/revoke", json={"refresh_token": rider.refresh_token})
        assert out.status_code == 204
        again = await http.post("/v1/sessions/refresh", json={"refresh_token": rider.refresh_token})
        assert again.status_code == 401


class TestCategories:
    async def test_concession_applies_only_after_an_operator_approves_it(
        self, http: httpx.AsyncClient, payments_http: httpx.AsyncClient
    ) -> None:
        student = await sign_up(http, category="student")
        me = (await http.get("/v1/me", headers=student.auth)).json()
        assert me["category"] == "regular"
        assert (me["requested_category"], me["category_status"]) == ("student", "pending")
        await fund(http, payments_http, student, 200_000)

        refused = await buy(http, student, "METRO-MONTH-C")
        assert refused.status_code == 403
        assert refused.json()["code"] == "category_not_eligible"

        queue = await http.get("/v1/admin/category-requests", headers=OPERATOR)
        assert queue.status_code == 200
        assert student.id in {r["id"] for r in queue.json()}
        await approve_category(http, student)
        me = (await http.get("/v1/me", headers=student.auth)).json()
        assert (me["category"], me["category_status"]) == ("student", "approved")

        bought = await buy(http, student, "METRO-MONTH-C")
        assert bought.status_code == 201, bought.text
        assert bought.json()["price_vnd"] == 140_000
        assert bought.json()["ticket"]["rider_category"] == "student"

    async def test_rejected_request_leaves_the_rider_regular(self, http: httpx.AsyncClient) -> None:
        rider = await sign_up(http)
        asked = await http.post("/v1/me/category", json={"category": "elderly"}, headers=rider.auth)
        assert asked.json()["category_status"] == "pending"
        decided = await http.post(
            f"/v1/admin/riders/{rider.id}/category",
            json={"approve": False, "note": "no ID card attached"},
            headers=OPERATOR,
        )
        assert decided.status_code == 200
        assert (decided.json()["category"], decided.json()["category_status"]) == (
            "regular",
            "rejected",
        )

    async def test_operator_endpoints_need_the_operator_token(
        self, http: httpx.AsyncClient
    ) -> None:
        rider = await sign_up(http, category="merit")
        url = f"/v1/admin/riders/{rider.id}/category"
        missing = await http.post(url, json={"approve": True})
        as_rider = await http.post(url, json={"approve": True}, headers=rider.auth)
        # The same refusal as the other services' admin tokens (was 403 `operator_only`).
        for refused in (missing, as_rider):
            assert (refused.status_code, refused.json()["code"]) == (401, "invalid_token")
        assert (await http.get("/v1/me", headers=rider.auth)).json()["category"] == "regular"
