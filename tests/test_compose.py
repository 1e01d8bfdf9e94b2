"""docker-compose.yml in production: every service's settings accept exactly what the file
gives its container once the `.env` example in the file's header is filled in, every secret
the file passes through is listed in that example, and Kafka keeps an acknowledged record
through the loss of a broker (three KRaft brokers, replication factor 3,
min.insync.replicas=2, producers with acks=all and idempotence)."""

from __future__ import annotations

import base64
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from citypass.stack import PROCESSES, service_environment
from services.operator.settings import OperatorSettings
from services.parking.settings import ParkingSettings
from services.payments.settings import PaymentsSettings
from services.ticketing.settings import TicketingSettings
from services.validation.settings import ValidationSettings
from shared.app import Runtime
from shared.settings import ServiceSettings

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
SETTINGS: dict[str, type[ServiceSettings]] = {
    "services.ticketing": TicketingSettings,
    "services.validation": ValidationSettings,
    "services.payments": PaymentsSettings,
    "services.parking": ParkingSettings,
    "services.operator": OperatorSettings,
}
ED25519_KEYS = {"VALIDATION_BUNDLE_SIGNING_KEY"}  # 32 raw bytes in base64, not free text
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _dotenv_example() -> dict[str, str]:
    """The header's `.env` example (`#   NAME=value  # comment`), with its empty values filled
    the way its comments ask: random secrets, an Ed25519 key where one is asked for."""
    filled: dict[str, str] = {}
    for match in re.finditer(r"^#\s+([A-Z][A-Z0-9_]*)=(\S*)", COMPOSE.read_text(), re.MULTILINE):
        name, value = match.groups()
        if not value:
            value = (
                base64.b64encode(secrets.token_bytes(32)).decode()
                if name in ED25519_KEYS
                else secrets.token_hex(32)
            )
        filled[name] = value
    filled["TICKETING_PAYMENTS_SERVICE_TOKEN"] = filled["PAYMENTS_SERVICE_TOKEN"]
    filled["PARKING_PAYMENTS_SERVICE_TOKEN"] = filled["PAYMENTS_SERVICE_TOKEN"]
    filled["VALIDATION_PAYMENTS_TOKEN"] = filled["PAYMENTS_SERVICE_TOKEN"]
    return filled


def _container_environment(environment: dict[str, Any], dotenv: dict[str, str]) -> dict[str, str]:
    """What docker compose hands the container: `${NAME:-default}` interpolated from `.env`,
    and a bare `NAME:` passed through only when `.env` sets it."""
    given: dict[str, str] = {}
    for name, value in environment.items():
        if value is None:
            if name in dotenv:
                given[name] = dotenv[name]
            continue
        given[name] = VARIABLE.sub(
            lambda found: dotenv.get(found.group(1)) or found.group(2) or "", str(value)
        )
    return given


def _app_services() -> list[tuple[str, str, dict[str, Any]]]:
    services = []
    for name, service in _compose()["services"].items():
        command = service.get("command") or []
        if command[:2] == ["python", "-m"] and command[2] in SETTINGS:
            services.append((name, command[2], service.get("environment", {})))
    return services


def test_every_app_service_is_checked() -> None:
    modules = {module for _, module, _ in _app_services()}
    assert modules == set(SETTINGS)


@pytest.mark.parametrize(("service", "module", "environment"), _app_services())
def test_service_starts_in_production_with_the_documented_env(
    service: str,
    module: str,
    environment: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings_in_container(module, environment, monkeypatch)

    assert settings.environment == "production", service


def _settings_in_container(
    module: str, environment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> ServiceSettings:
    """The settings a service reads in its container, nothing from this process's own env."""
    settings_class = SETTINGS[module]
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    for name in [*settings_class.model_fields]:
        monkeypatch.delenv(f"{prefix}{name}".upper(), raising=False)
    for name, value in _container_environment(environment, _dotenv_example()).items():
        monkeypatch.setenv(name, value)
    return settings_class()


def test_without_the_bundle_key_validation_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dotenv = _dotenv_example()
    del dotenv["VALIDATION_BUNDLE_SIGNING_KEY"]
    validation = _compose()["services"]["validation"]["environment"]
    for name, value in _container_environment(validation, dotenv).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("VALIDATION_BUNDLE_SIGNING_KEY", raising=False)

    with pytest.raises(ValidationError, match="bundle_signing_key must be set in production"):
        ValidationSettings()


def test_a_bundle_key_that_is_not_an_ed25519_key_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VALIDATION_BUNDLE_SIGNING_KEY", secrets.token_hex(32))

    with pytest.raises(ValidationError, match="raw 32-byte Ed25519 key"):
        ValidationSettings(environment="development")


def test_every_passed_through_secret_is_in_the_env_example() -> None:
    documented = _dotenv_example()
    passed_through = {
        name
        for service in _compose()["services"].values()
        for name, value in service.get("environment", {}).items()
        if value is None
    }
    assert passed_through - set(documented) == set()


def _kafka_brokers() -> dict[str, dict[str, str]]:
    return {
        name: {key: str(value) for key, value in service["environment"].items()}
        for name, service in _compose()["services"].items()
        if str(service.get("image", "")).startswith("apache/kafka:")
    }


class TestKafkaSurvivesTheLossOfABroker:
    def test_three_kraft_brokers_form_the_controller_quorum(self) -> None:
        brokers = _kafka_brokers()

        assert len(brokers) == 3
        ids = {env["KAFKA_NODE_ID"] for env in brokers.values()}
        assert len(ids) == 3
        for name, env in brokers.items():
            assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, name
            assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == ",".join(
                f"{env_['KAFKA_NODE_ID']}@{other}:9093" for other, env_ in brokers.items()
            ), name
            assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        volumes = [tuple(service["volumes"]) for service in self._broker_services()]
        assert len(set(volumes)) == 3  # each broker its own log directory

    def test_every_record_has_three_replicas_two_of_which_acknowledge_it(self) -> None:
        for name, env in _kafka_brokers().items():
            assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3", name
            assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2", name
            assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3", name
            assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3", name
            assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2", name
            assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false", name
            assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name

    def test_the_platform_topics_are_created_with_three_replicas(self) -> None:
        topics = _compose()["services"]["topics"]

        command = topics["command"]
        assert command[:3] == ["citypass", "stack", "topics"]
        assert command[command.index("--replication-factor") + 1] == "3"
        bootstrap = _container_environment(topics["environment"], _dotenv_example())
        assert self._hosts(bootstrap["CITYPASS_KAFKA_BOOTSTRAP_SERVERS"]) == set(_kafka_brokers())

    @pytest.mark.parametrize(("service", "module", "environment"), _app_services())
    def test_every_service_knows_every_broker_and_produces_with_acks_all_and_idempotence(
        self,
        service: str,
        module: str,
        environment: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        settings = _settings_in_container(module, environment, monkeypatch)

        config = Runtime(service, settings).publisher.producer_config()

        assert self._hosts(config["bootstrap_servers"]) == set(_kafka_brokers()), service
        assert config["acks"] == "all", service
        assert config["enable_idempotence"] is True, service

    def test_the_local_stack_leaves_idempotence_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Its broker (Tansu) has no InitProducerId: an idempotent producer could not start."""
        for spec in PROCESSES:
            module = spec.module or f"services.{spec.name}"
            local = service_environment(
                spec,
                "postgresql+asyncpg://u:p@127.0.0.1/db",
                "redis://127.0.0.1/0",
                "127.0.0.1:29092",
                "development",
            )
            settings = _settings_in_container(module, local, monkeypatch)

            config = Runtime(spec.name, settings).publisher.producer_config()

            assert config["acks"] == "all", spec.name
            assert config["enable_idempotence"] is False, spec.name

    @staticmethod
    def _hosts(bootstrap: str) -> set[str]:
        return {server.rsplit(":", 1)[0] for server in bootstrap.split(",")}

    @staticmethod
    def _broker_services() -> list[dict[str, Any]]:
        return [
            service
            for service in _compose()["services"].values()
            if str(service.get("image", "")).startswith("apache/kafka:")
        ]
