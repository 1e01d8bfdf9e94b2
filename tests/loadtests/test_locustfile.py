"""`locust -f loadtests/locustfile.py` run on its own, before any population exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"


def test_without_a_population_locust_says_what_to_run_first(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CITYPASS_POPULATION"}
    locust = Path(sys.executable).parent / "locust"

    run = subprocess.run(
        [str(locust), "-f", str(LOCUSTFILE), "--headless", "--run-time", "1s"],
        cwd=tmp_path,  # no var/loadtest/population.json here
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "Traceback" not in output
    assert "FileNotFoundError" not in output
    assert "No load-test population at var/loadtest/population.json" in output
    assert "make loadtest" in output
    assert "python -m loadtests.population --out var/loadtest/population.json" in output
