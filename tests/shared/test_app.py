"""What every service gets from the kit: readiness with reasons, problems, metrics, settings."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import APIRouter, FastAPI, Request, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy import text
from starlette.responses import Response
from starlette.types import Message, Scope

from citypass.servers import LocalServers, free_port
from services.payments.app import build_app as build_payments
from services.payments.settings import PaymentsSettings
from services.validation.app import build_app as build_validation
from services.validation.settings import ValidationSettings
from shared.app import Runtime, create_app
from shared.db import Database, is_unavailable
from shared.errors import PROBLEM_CONTENT, Unprocessable
from shared.hot import HotRoute, HotRouter, ServedRoute
from shared.idempotency import IdempotencyDep
from shared.settings import ServiceSettings
from tests.conftest import AppClient


class TestReadiness:
    async def test_unreachable_database_and_wrong_broker_fail_readyz_with_reasons(
        self, app_client: AppClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings = PaymentsSettings(
            environment="test",
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/citypass",
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            dependency_timeout_s=1,
            kafka_send_timeout_s=1,
        )
        with caplog.at_level(logging.ERROR, logger="citypass.app"):
            async with app_client(build_payments(settings)) as http:
                alive = await http.get("/healthz")
                ready = await http.get("/readyz")
        assert alive.status_code == 200
        assert ready.status_code == 503
        problem = ready.json()
        assert problem["code"] == "not_ready"
        assert problem["checks"]["postgres"].startswith("failing:")
        assert problem["checks"]["kafka"].startswith("failing:")
        assert "postgres" in problem["detail"]
        assert "kafka" in problem["detail"]
        start_up = " ".join(r.getMessage() for r in caplog.records)
        assert "postgres is failing" in start_up
        assert "kafka is failing" in start_up

    async def test_wrong_redis_address_fails_readyz(self, app_client: AppClient) -> None:
        settings = ValidationSettings(
            environment="test",
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            dependency_timeout_s=1,
        )
        async with app_client(build_validation(settings)) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"].startswith("failing:")

    async def test_healthy_dependencies_make_readyz_200(
        self, app_client: AppClient, servers: LocalServers
    ) -> None:
        async with app_client(build_validation()) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"redis": "ok", "kafka": "ok"}


failing_router = APIRouter()


@failing_router.get("/boom/{item_id}")
async def boom(item_id: int) -> None:
    raise RuntimeError(f"secret internal state {item_id}")


class TestProblems:
    async def test_unexpected_error_is_a_500_problem_without_stack_trace(
        self, servers: LocalServers
    ) -> None:
        settings = ServiceSettings(
            environment="test", kafka_bootstrap_servers=servers.kafka_bootstrap
        )
        app = create_app(Runtime("kit-test", settings), [failing_router], title="t", description="")
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://kit") as http:
            response = await http.get("/boom/7")
            metrics = (await http.get("/metrics")).text
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "internal_error"
        assert "secret internal state" not in response.text
        assert "Traceback" not in response.text
        assert 'route="/boom/{item_id}"' in metrics
        assert "/boom/7" not in metrics

    async def test_validation_error_is_a_422_problem_naming_the_field(
        self, app_client: AppClient
    ) -> None:
        async with app_client(build_validation()) as http:
            response = await http.get("/v1/gates/" + "x" * 80)
        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "validation_error"
        assert body["errors"][0]["loc"] == ["path", "gate_id"]

    async def test_request_id_is_echoed(self, app_client: AppClient) -> None:
        async with app_client(build_validation()) as http:
            response = await http.get("/v1/lines", headers={"X-Request-ID": "trace-123"})
        assert response.headers["x-request-id"] == "trace-123"


class Order(BaseModel):
    item: str
    count: int


hot = HotRouter[str](tags=["orders"], max_body_bytes=64)


@hot.post("/v1/orders", body=Order, response_model=Order)
async def hot_order(shop: str, route: HotRoute[Order], _scope: Scope, body: bytes) -> Response:
    order = route.command(body)
    if order.item == "boom":
        raise RuntimeError("secret internal state")
    if order.count > 9:
        raise Unprocessable("Too many.", code="too_many", limit=9)
    return Response(
        orjson.dumps({"ordered": order.count, "shop": shop}), media_type="application/json"
    )


def app_with_hot_routes(
    servers: LocalServers, router: APIRouter, hot_routes: list[ServedRoute]
) -> FastAPI:
    settings = ServiceSettings(environment="test", kafka_bootstrap_servers=servers.kafka_bootstrap)
    return create_app(
        Runtime("hot-test", settings), [router], title="t", description="", hot_routes=hot_routes
    )


class TestHotRoutes:
    """A hot route skips FastAPI but keeps what the middleware chain gives every route."""

    @pytest.fixture
    def app(self, servers: LocalServers) -> FastAPI:
        return app_with_hot_routes(servers, failing_router, hot.bind("corner shop"))

    async def test_answers_with_request_id_and_metrics(
        self, app: FastAPI, app_client: AppClient
    ) -> None:
        async with app_client(app) as http:
            ok = await http.post(
                "/v1/orders", content=b'{"item":"tea","count":2}', headers={"X-Request-ID": "r-1"}
            )
            fallthrough = await http.get("/healthz")
            metrics = (await http.get("/metrics")).text
        assert ok.status_code == 200
        assert ok.json() == {"ordered": 2, "shop": "corner shop"}
        assert ok.headers["x-request-id"] == "r-1"
        assert fallthrough.status_code == 200
        assert 'route="/v1/orders",service="hot-test",status="200"' in metrics

    async def test_another_method_or_a_trailing_slash_is_answered_as_on_any_route(
        self, app: FastAPI, app_client: AppClient
    ) -> None:
        async with app_client(app) as http:
            wrong_method = await http.get("/v1/orders")
            slash = await http.post("/v1/orders/", content=b'{"item":"tea","count":2}')
        assert (wrong_method.status_code, wrong_method.json()["code"]) == (
            405,
            "method_not_allowed",
        )
        assert (slash.status_code, slash.headers["location"]) == (
            307,
            "http://testserver/v1/orders",
        )

    async def test_errors_are_problems(self, app: FastAPI, app_client: AppClient) -> None:
        async with app_client(app) as http:
            invalid = await http.post("/v1/orders", content=b'{"item":"tea"}')
            refused = await http.post("/v1/orders", content=b'{"item":"tea","count":10}')
            too_big = await http.post("/v1/orders", content=b"x" * 65)
            failed = await http.post("/v1/orders", content=b'{"item":"boom","count":1}')
        assert (invalid.status_code, invalid.json()["code"]) == (422, "validation_error")
        assert invalid.json()["errors"][0]["loc"] == ["body", "count"]
        assert (refused.status_code, refused.json()["code"]) == (422, "too_many")
        assert refused.json()["limit"] == 9
        assert (too_big.status_code, too_big.json()["code"]) == (413, "payload_too_large")
        assert (failed.status_code, failed.json()["code"]) == (500, "internal_error")
        assert "secret" not in failed.text
        for response in (invalid, refused, too_big, failed):
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["x-request-id"]


# One operation declared twice, as a hot route and as a FastAPI route: the two must look the same
# from outside, in the OpenAPI and in every refusal.

orders_bearer = HTTPBearer(auto_error=False, description="The shop's token")
ORDER_RESPONSES: dict[int | str, dict[str, Any]] = {409: {"description": "`sold_out`"}}
orders = HotRouter[None](tags=["orders"], security=orders_bearer)


@orders.post(
    "/hot/orders/{order_id}",
    body=Order,
    path_types={"order_id": uuid.UUID},
    idempotent=True,
    response_model=Order,
    status_code=201,
    responses=ORDER_RESPONSES,
)
async def place_order(
    _context: None, route: HotRoute[Order], scope: Scope, body: bytes
) -> Response:
    """Place an order; retries with the same Idempotency-Key are answered once."""
    _, _, order = route.call(scope, body)
    return Response(order.model_dump_json(), 201, media_type="application/json")


fastapi_orders = APIRouter(tags=["orders"])


@fastapi_orders.post(
    "/fastapi/orders/{order_id}",
    response_model=Order,
    status_code=201,
    responses=ORDER_RESPONSES,
    dependencies=[Security(orders_bearer)],
)
async def place_order_twin(order_id: uuid.UUID, body: Order, _key: IdempotencyDep) -> Order:
    """Place an order; retries with the same Idempotency-Key are answered once."""
    return body


class TestHotRouteDeclaration:
    """A hot route's OpenAPI operation and its refusals are those of the same FastAPI route."""

    @pytest.fixture
    def app(self, servers: LocalServers) -> FastAPI:
        return app_with_hot_routes(servers, fastapi_orders, orders.bind(None))

    def test_its_openapi_operation_is_the_fastapi_routes(self, app: FastAPI) -> None:
        paths = app.openapi()["paths"]
        hot_operation = paths["/hot/orders/{order_id}"]["post"]
        twin = paths["/fastapi/orders/{order_id}"]["post"]
        for operation in (hot_operation, twin):
            del operation["operationId"], operation["summary"]
        assert hot_operation == twin
        assert hot_operation["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Order"
        }
        assert {(p["in"], p["name"], p["required"]) for p in hot_operation["parameters"]} == {
            ("path", "order_id", True),
            ("header", "Idempotency-Key", True),
        }
        assert hot_operation["security"] == [{"HTTPBearer": []}]
        assert hot_operation["description"].startswith("Place an order")
        assert hot_operation["responses"]["409"]["content"] == PROBLEM_CONTENT
        assert hot_operation["responses"]["422"]["content"] == PROBLEM_CONTENT

    @pytest.mark.parametrize(
        ("order_id", "key", "body"),
        [
            (str(uuid.uuid4()), "k-1", b'{"item": "tea"}'),
            (str(uuid.uuid4()), "k-2", b'{"item": 7, "count": "many"}'),
            (str(uuid.uuid4()), "k-3", b'{"item": "tea", '),
            (str(uuid.uuid4()), "k-4", b""),
            ("not-a-uuid", "k" * 256, b'{"count": 1}'),
            (str(uuid.uuid4()), None, b'{"item": "tea", "count": 1}'),
        ],
        ids=["missing field", "wrong types", "not json", "empty", "key path and body", "no key"],
    )
    async def test_it_refuses_as_fastapi_does(
        self, app: FastAPI, app_client: AppClient, order_id: str, key: str | None, body: bytes
    ) -> None:
        headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
        async with app_client(app) as http:
            hot_answer = await http.post(f"/hot/orders/{order_id}", content=body, headers=headers)
            twin = await http.post(f"/fastapi/orders/{order_id}", content=body, headers=headers)
        assert hot_answer.status_code == twin.status_code
        assert hot_answer.headers["content-type"] == "application/problem+json"
        problems = [answer.json() for answer in (hot_answer, twin)]
        for problem in problems:
            del problem["instance"]
        assert problems[0] == problems[1]


class TestSettings:
    def test_production_refuses_placeholder_secrets(self) -> None:
        class SecretSettings(ServiceSettings):
            api_secret: SecretStr = SecretStr("dev-only-change-me")

        with pytest.raises(ValidationError, match="placeholder secret"):
            SecretSettings(environment="production")
        assert SecretSettings(environment="development").api_secret

    def test_production_accepts_a_real_secret(self) -> None:
        class SecretSettings(ServiceSettings):
            api_secret: SecretStr = SecretStr("dev-only-change-me")

        settings = SecretSettings(environment="production", api_secret="q8Jf2LxV9tRz0WmK4pYs")
        assert settings.api_secret.get_secret_value().startswith("q8J")


class TestDatabaseAway:
    """A PostgreSQL that does not answer is a 503 to retry, on FastAPI's routes and hot ones."""

    async def test_reads_and_hot_writes_answer_503_with_retry_after(
        self, app_client: AppClient
    ) -> None:
        settings = PaymentsSettings(
            environment="test",
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/citypass",
            service_token="kit-test-service-token",
        )
        headers = {"Authorization": "Bearer kit-test-service-token", "X-Request-ID": "db-away"}
        async with app_client(build_payments(settings)) as http:
            read = await http.get(f"/v1/accounts/{uuid.uuid4()}", headers=headers)
            write = await http.post(
                "/v1/charges",
                json={"account_id": str(uuid.uuid4()), "amount": 1000, "source": "transit"},
                headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
            )
        for response in (read, write):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "database_unavailable"
            assert int(response.headers["retry-after"]) > 0
            assert response.headers["x-request-id"] == "db-away"

    async def test_a_bad_statement_is_not_mistaken_for_an_outage(
        self, migrated: LocalServers
    ) -> None:
        database = Database(migrated.database_url, "payments", pool_size=1)
        try:
            with pytest.raises(Exception) as bad:  # noqa: PT011  (whatever the driver raises)
                await database.fetchrow("SELECT * FROM no_such_table")
            async with database.transaction() as session:
                with pytest.raises(Exception) as bad_orm:  # noqa: PT011
                    await session.execute(text("SELECT 1/0"))
        finally:
            await database.close()
        assert not is_unavailable(bad.value)
        assert not is_unavailable(bad_orm.value)


class TestRequestGuard:
    """Every service's body limit, from the kit: refused before anything reads or parses."""

    @pytest.fixture
    def app(self, servers: LocalServers) -> FastAPI:
        settings = ServiceSettings(
            environment="test", kafka_bootstrap_servers=servers.kafka_bootstrap, max_body_bytes=4096
        )
        return create_app(Runtime("guard-test", settings), [echo_router], title="t", description="")

    async def test_a_chunked_body_is_read_no_further_than_the_limit(self, app: FastAPI) -> None:
        received = 0
        sent: list[Message] = []

        async def endless_body() -> Message:
            nonlocal received
            received += 1024
            return {"type": "http.request", "body": b" " * 1024, "more_body": True}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/echo",
            "raw_path": b"/echo",
            "query_string": b"",
            "headers": [(b"transfer-encoding", b"chunked")],
            "server": ("kit", 80),
            "client": ("127.0.0.1", 1),
            "root_path": "",
            "state": {},
        }
        await app(scope, endless_body, send)

        assert sent[0]["status"] == 413
        assert orjson.loads(sent[1]["body"])["code"] == "payload_too_large"
        assert received <= 4096 + 1024

    async def test_bodies_within_the_limit_reach_the_route(
        self, app: FastAPI, app_client: AppClient
    ) -> None:
        async def pieces() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"x" * 1000

        async with app_client(app) as http:
            declared = await http.post("/echo", content=b"y" * 4096)
            streamed = await http.post("/echo", content=pieces())
            too_big = await http.post("/echo", content=b"y" * 4097)
        assert declared.json() == {"length": 4096}
        assert streamed.json() == {"length": 4000}
        assert (too_big.status_code, too_big.json()["code"]) == (413, "payload_too_large")
        assert too_big.headers["x-request-id"]


echo_router = APIRouter()


@echo_router.post("/echo")
async def echo(request: Request) -> dict[str, int]:
    return {"length": len(await request.body())}
