"""Read a GTFS feed (a directory or a zip) into text tables, and refuse a bad one.

Every problem names its file, line and field, as the feed's editor sees them: line 1 is the
header, a file-level problem has line 0 and an empty field. Nothing is half-read: `read_feed`
returns a whole `Feed` or raises `FeedRejected` with every problem found.
"""

from __future__ import annotations

import csv
import io
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ProblemError
from shared.fares.schema import FILES, FileSpec

WIDTH = "\0width"  # a row whose width differs from the header's carries it here
MAX_PROBLEMS = 200  # enough to fix a feed in one pass without flooding an answer


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class FeedRejected(ProblemError):
    status, code, title = 422, "invalid_feed", "Invalid GTFS feed"

    def __init__(self, problems: list[Problem]) -> None:
        shown = problems[:MAX_PROBLEMS]
        super().__init__(
            f"{len(problems)} problem(s): " + "; ".join(str(p) for p in shown[:5]),
            problems=[
                {"file": p.file, "line": p.line, "field": p.field, "message": p.message}
                for p in shown
            ],
        )
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    values: Mapping[str, str]

    def get(self, column: str) -> str:
        return self.values.get(column, "")


MAX_FEED_BYTES = 64 * 1024 * 1024  # a city's network and fares, without timetables, is far less


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    header: tuple[str, ...]
    rows: tuple[Row, ...]

    def column(self, name: str) -> set[str]:
        return {value for row in self.rows if (value := row.get(name))}


def read_tables(source: Path | str | bytes, *, max_bytes: int = MAX_FEED_BYTES) -> dict[str, Table]:
    """Every `.txt` file of a feed as a table of strings (a directory, a zip path or zip bytes).
    A zip is read only up to `max_bytes` of text in all, whatever its headers claim: a small
    upload must not expand into memory without bound."""
    texts: dict[str, bytes] = {}
    if isinstance(source, bytes) or (Path(source).is_file()):
        opened = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
        left = max_bytes
        try:
            with zipfile.ZipFile(opened) as archive:
                for info in archive.infolist():
                    name = info.filename.rsplit("/", 1)[-1]
                    if name.endswith(".txt") and not info.is_dir():
                        with archive.open(info) as member:
                            texts[name] = member.read(left + 1)
                        left -= len(texts[name])
                        if left < 0:
                            raise FeedRejected(
                                [Problem(name, 0, "", f"the feed expands past {max_bytes} bytes")]
                            )
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            NotImplementedError,  # a compression method zipfile does not read
            zlib.error,  # a damaged deflate stream
            EOFError,  # a member cut short
        ) as error:
            raise FeedRejected(
                [Problem("", 0, "", f"not a readable zip archive: {error}")]
            ) from None
    else:
        for path in sorted(Path(source).glob("*.txt")):
            texts[path.name] = path.read_bytes()
    undecodable = []
    for name, data in texts.items():
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            undecodable.append(
                Problem(name, 0, "", f"not UTF-8 text ({error.reason} at byte {error.start})")
            )
    if undecodable:
        raise FeedRejected(undecodable)
    return {name: _table(name, data) for name, data in texts.items()}


def _table(name: str, data: bytes) -> Table:
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    header: tuple[str, ...] = ()
    rows: list[Row] = []
    for record in reader:
        if not header:
            header = tuple(column.strip() for column in record)
            continue
        if not any(value.strip() for value in record):
            continue
        values = dict(zip(header, (value.strip() for value in record), strict=False))
        if len(record) != len(header):
            values[WIDTH] = str(len(record))  # reported by check_structure
        rows.append(Row(reader.line_num, values))
    return Table(name, header, tuple(rows))


def check_structure(tables: Mapping[str, Table]) -> list[Problem]:
    """Files, columns, values, primary keys and foreign keys, against the GTFS reference."""
    problems: list[Problem] = []
    for spec in FILES:
        table = tables.get(spec.name)
        if table is None:
            if spec.required:
                problems.append(Problem(spec.name, 0, "", "required file is missing"))
            continue
        problems += _check_table(spec, table)
    for spec in FILES:
        if spec.name in tables:
            problems += _check_foreign_keys(spec, tables)
    return problems


def _check_table(spec: FileSpec, table: Table) -> Iterator[Problem]:
    seen_columns: set[str] = set()
    for column in table.header:
        if column in seen_columns:
            yield Problem(spec.name, 1, column, "column appears twice")
        seen_columns.add(column)
    if spec.required and not table.rows:
        yield Problem(spec.name, 0, "", "has no rows")
    missing = [c for c, col in spec.columns.items() if col.required and c not in table.header]
    for column in missing:
        yield Problem(spec.name, 1, column, "required column is missing")
    keys: dict[tuple[str, ...], int] = {}
    for row in table.rows:
        width = row.values.get(WIDTH)
        if width is not None:
            message = f"row has {width} values, the header {len(table.header)}"
            yield Problem(spec.name, row.line, "", message)
        for name, column_spec in spec.columns.items():
            value = row.get(name)
            if not value:
                if column_spec.required and name not in missing:
                    yield Problem(spec.name, row.line, name, "required value is empty")
                continue
            try:
                column_spec.parse(value)
            except ValueError as error:
                yield Problem(spec.name, row.line, name, str(error))
        if spec.primary_key:
            key = tuple(row.get(column) for column in spec.primary_key)
            if key in keys:
                yield Problem(
                    spec.name,
                    row.line,
                    ",".join(spec.primary_key),
                    f"same key as line {keys[key]}",
                )
            keys.setdefault(key, row.line)


def _check_foreign_keys(spec: FileSpec, tables: Mapping[str, Table]) -> Iterator[Problem]:
    table = tables[spec.name]
    for column, (target_file, target_column) in spec.foreign_keys.items():
        target = tables.get(target_file)
        known = target.column(target_column) if target is not None else set()
        for row in table.rows:
            value = row.get(column)
            if value and value not in known:
                yield Problem(
                    spec.name, row.line, column, f"{value!r} is not a {target_file} {target_column}"
                )
