"""`citypass`: the platform's command line (local stack, bank sandbox, rider and gate tools)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module exposes `register(subparsers)`; its subcommand sets `func(args) -> int`.
COMMAND_MODULES = (
    "citypass.stack",
    "citypass.bank",
    "citypass.rider",
    "citypass.gate",
    "citypass.parking",
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
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
