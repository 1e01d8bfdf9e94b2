"""docker-compose.yml in production: every service's settings accept exactly what the file
gives its container once the `.env` example in the file's header is filled in, and every
secret the file passes through is listed in that example."""

from __future__ import annotations

import base64
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.operator.settings import OperatorSettings
from services.parking.settings import ParkingSettings
from services.payments.settings import PaymentsSettings
from services.ticketing.settings import TicketingSettings
from services.validation.settings import ValidationSettings
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
    given = _container_environment(environment, _dotenv_example())
    settings_class = SETTINGS[module]
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    for name in [*settings_class.model_fields]:
        monkeypatch.delenv(f"{prefix}{name}".upper(), raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)

    settings = settings_class()

    assert settings.environment == "production", service


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
