"""docs/metrics.md documents every CityPass metric the code registers, and the Grafana
dashboard (infra/grafana/citypass.json) only queries metrics that exist."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

from citypass.stack import SERVICES

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bcitypass_[a-z0-9_]+")


def registered() -> set[str]:
    """`citypass_*` series names of every service (their modules register at import)."""
    for spec in SERVICES:
        importlib.import_module(f"services.{spec.name}.app")
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("citypass_"):
            names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def documented() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `citypass_")]
    return {NAME.findall(row)[0] for row in rows}


def queried() -> set[str]:
    dashboard = json.loads((ROOT / "infra" / "grafana" / "citypass.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    return {re.sub(r"_(bucket|count|sum)$", "", name) for e in exprs for name in NAME.findall(e)}


class TestMetricsDocs:
    def test_every_registered_metric_is_documented(self) -> None:
        assert registered() - documented() == set()

    def test_every_documented_metric_exists(self) -> None:
        assert documented() - registered() == set()

    def test_the_dashboard_queries_only_existing_metrics(self) -> None:
        assert queried() - registered() == set()
        assert len(queried()) >= 15
