"""`citypass`: the platform's command line (local stack, bank sandbox, rider and gate tools,
network versions)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Each module exposes `register(subparsers)`; its subcommand sets `func(args) -> int`.
COMMAND_MODULES = (
    "citypass.stack",
    "citypass.bank",
    "citypass.rider",
    "citypass.gate",
    "citypass.parking",
    "citypass.network",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="citypass", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
    except BrokenPipeError:
        # The reader went away (`citypass gate scan … | head -1`): what it wanted was printed.
        # Point stdout at nothing so that the interpreter's own flush at exit fails quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return result


if __name__ == "__main__":
    sys.exit(main())
