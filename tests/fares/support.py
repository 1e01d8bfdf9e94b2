"""Feeds for the fare tests: Hanoi's, or a copy of it with some files rewritten."""

from __future__ import annotations

import shutil
from pathlib import Path

from shared.fares.feed import HANOI, Feed, read_feed

# 2026-11-10 (a Tuesday) 08:00 in Hanoi, inside the Hanoi feed's calendar.
TUESDAY_8AM = 1_794_272_400


def hanoi_copy(target: Path, **files: str) -> Path:
    """Hanoi's feed copied to `target`; each keyword (file stem) replaces that file's text.

    A value of "" deletes the file.
    """
    shutil.copytree(HANOI, target, dirs_exist_ok=True)
    for stem, text in files.items():
        path = target / f"{stem}.txt"
        if text:
            path.write_text(text, encoding="utf-8")
        else:
            path.unlink()
    return target


def edited(target: Path, stem: str, old: str, new: str) -> Path:
    """Hanoi's feed with one text replaced in one file (the text must be there)."""
    hanoi_copy(target)
    path = target / f"{stem}.txt"
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {stem}.txt"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return target


def hanoi() -> Feed:
    return read_feed(HANOI)
