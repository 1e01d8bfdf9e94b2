"""`citypass rider signup` / `login` when the password prompt is closed instead of answered: one
line saying nothing was done, never a traceback. The CLI runs as a subprocess in a session of its
own (no controlling terminal), so the prompt reads the stdin this test gives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

NO_PASSWORD = "No password given: nothing was done."


def _rider(home: Path, command: str, stdin: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "CITYPASS_RIDER_PASSWORD"}
    rider = ["rider", "--home", str(home), "--url", "http://127.0.0.1:9"]  # nothing listens
    return subprocess.Popen(
        [sys.executable, "-m", "citypass.cli", *rider, command, "--phone", "0987654321"],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # no controlling terminal: getpass cannot open /dev/tty
    )


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and line.strip() != "Password:"]


class TestClosedPasswordPrompt:
    @pytest.mark.parametrize("command", ["signup", "login"])
    def test_end_of_input_prints_one_line(self, tmp_path: Path, command: str) -> None:
        rider = _rider(tmp_path, command, subprocess.DEVNULL)

        out, err = rider.communicate(timeout=60)

        assert rider.returncode == 1
        assert out == ""
        assert _lines(err) == [NO_PASSWORD]

    def test_ctrl_c_at_the_prompt_prints_one_line(self, tmp_path: Path) -> None:
        rider = _rider(tmp_path, "login", subprocess.PIPE)
        assert rider.stderr is not None
        prompt = ""
        deadline = time.monotonic() + 60
        while not prompt.endswith("Password: ") and time.monotonic() < deadline:
            prompt += rider.stderr.read(1)  # the prompt is flushed without a newline
        assert prompt.endswith("Password: ")

        rider.send_signal(signal.SIGINT)
        try:
            out, err = rider.communicate(timeout=20)
        finally:
            rider.kill()

        assert rider.returncode == 130
        assert out == ""
        assert _lines(prompt + err) == [NO_PASSWORD]
