"""Vietnamese licence plates: normalise what cameras and people type (pure, no I/O).

Formats (Circular 24/2023/TT-BCA and the older series still on the road):

- car: two-digit province code, a one- or two-letter series, then 4 or 5 digits:
  ``29A-123.45``, ``30K-1234``, ``30LD-123.45``;
- motorbike: province code, then a letter and a digit (``B1``, ``MĐ1`` for electric ones) or,
  for mopeds under 50 cc, two letters set apart by a dash (``29-AA``), then 4 or 5 digits:
  ``29-B1 234.56``, ``29-B1 2345``, ``29-AA 123.45``.

Reads are accepted with any spacing, dots and dashes and in any case. The *key* drops the
separators and maps Đ to D (cameras cannot tell them apart), so every read of one plate has the
same key; the *display* form is the canonical written one. Written without separators, a
letter followed by five digits is read as a car (``29A12345`` → ``29A-123.45``), the modern
layout; the key is the same either way. Series never use I, J, O, Q or W: a read with one is an
OCR confusion (O/0, I/1) and is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_SEPARATOR = r"[\s.\-_]"
_LAYOUT = re.compile(
    rf"(?P<province>[0-9]{{2}})(?P<sep1>{_SEPARATOR}*)(?P<letters>[A-ZĐ]{{1,2}})"
    rf"(?P<digit>[0-9]?)(?P<sep2>{_SEPARATOR}*)(?P<rest>[0-9][0-9\s.\-_]*)"
)
_SEPARATORS = re.compile(f"{_SEPARATOR}+")
_FORBIDDEN_LETTERS = frozenset("IJOQW")
_MAX_INPUT = 20


class PlateKind(StrEnum):
    MOTORBIKE = "motorbike"
    CAR = "car"


class InvalidPlate(ValueError):
    """Not a Vietnamese plate; the message says what is wrong, for the integrator."""


@dataclass(frozen=True, slots=True)
class Plate:
    key: str  # separators dropped, Đ as D: what two reads of the same plate share
    display: str  # the canonical written form
    kind: PlateKind

    def masked(self) -> str:
        """Province and series kept, the number hidden but for its last two digits."""
        separator = "-" if self.kind is PlateKind.CAR else " "
        head, _, number = self.display.rpartition(separator)
        hidden = "".join("*" if ch.isdigit() else ch for ch in number[:-2]) + number[-2:]
        return f"{head}{separator}{hidden}"


def _number(digits: str) -> str:
    return f"{digits[:3]}.{digits[3:]}" if len(digits) == 5 else digits


def _refuse(raw: str) -> InvalidPlate:
    return InvalidPlate(
        f"{raw!r} is not a Vietnamese plate (e.g. 29A-123.45 for a car,"
        " 29-B1 234.56 for a motorbike)"
    )


def normalise(raw: str) -> Plate:
    """The plate in `raw`, or InvalidPlate."""
    if not raw.strip() or len(raw) > _MAX_INPUT:
        raise InvalidPlate(f"a plate has 1 to {_MAX_INPUT} characters")
    text = raw.strip().upper()
    layout = _LAYOUT.fullmatch(text)
    if layout is None or not 11 <= int(layout["province"]) <= 99:
        raise _refuse(raw)
    letters = layout["letters"]
    if _FORBIDDEN_LETTERS & set(letters):
        raise _refuse(raw)
    province, digit = layout["province"], layout["digit"]
    rest = _SEPARATORS.sub("", layout["rest"])
    apart = bool(layout["sep1"])  # "29-B1…", "29-AA…": the motorbike way of writing it
    if digit and (layout["sep2"] or len(digit + rest) == 6 or apart):
        kind, series, number = PlateKind.MOTORBIKE, letters + digit, rest
    elif digit:
        kind, series, number = PlateKind.CAR, letters, digit + rest
    else:
        moped = apart and len(letters) == 2
        kind = PlateKind.MOTORBIKE if moped else PlateKind.CAR
        series, number = letters, rest
    if not 4 <= len(number) <= 5:
        raise _refuse(raw)
    key = f"{province}{series}{number}".replace("Đ", "D")
    if kind is PlateKind.CAR:
        return Plate(key, f"{province}{series}-{_number(number)}", kind)
    return Plate(key, f"{province}-{series} {_number(number)}", kind)
