"""A bad feed is refused whole, each problem naming its file, line and field (pure)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from shared.fares.feed import HANOI, read_feed
from shared.fares.reader import FeedRejected, Problem, read_tables
from tests.fares.support import edited, hanoi_copy


def refusal(source: Path | bytes, currency: str = "VND") -> list[Problem]:
    with pytest.raises(FeedRejected) as caught:
        read_feed(source, currency=currency)
    assert caught.value.status == 422
    assert caught.value.code == "invalid_feed"
    return caught.value.problems


def where(problems: list[Problem]) -> set[tuple[str, int, str]]:
    return {(p.file, p.line, p.field) for p in problems}


class TestGoodFeeds:
    def test_hanoi_directory_is_read(self) -> None:
        assert read_feed(HANOI).currency == "VND"

    def test_a_zip_is_read_from_a_path_or_bytes(self, tmp_path: Path) -> None:
        archive = tmp_path / "hanoi.zip"
        with zipfile.ZipFile(archive, "w") as out:
            for path in HANOI.glob("*.txt"):
                out.write(path, f"hanoi/{path.name}")  # a zip may hold a folder
        assert read_feed(archive).tables.keys() == read_feed(archive.read_bytes()).tables.keys()


class TestRefused:
    def test_bytes_that_are_not_a_zip(self) -> None:
        (problem,) = refusal(b"stop_id,stop_name\n")
        assert (problem.file, problem.line) == ("", 0)
        assert problem.message.startswith("not a readable zip archive")

    def test_a_zip_that_expands_past_the_limit(self) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
            out.writestr("stops.txt", b"stop_id\n" + b"0" * 10_000)  # ~40 bytes compressed
        with pytest.raises(FeedRejected) as refused:
            read_tables(buffer.getvalue(), max_bytes=5_000)
        (problem,) = refused.value.problems
        assert problem.file == "stops.txt"
        assert "expands past 5000 bytes" in problem.message

    def test_a_zip_whose_deflate_stream_is_damaged(self) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
            out.writestr("stops.txt", b"stop_id,stop_name\n" + b"S1,One\n" * 500)
        damaged = bytearray(buffer.getvalue())
        start = damaged.index(b"stops.txt") + len(b"stops.txt")  # the local header's name ends
        for offset in range(start + 10, start + 30):
            damaged[offset] ^= 0xFF
        (problem,) = refusal(bytes(damaged))
        assert problem.message.startswith("not a readable zip archive")

    def test_a_file_that_is_not_utf8(self, tmp_path: Path) -> None:
        feed = hanoi_copy(tmp_path)
        stops = (feed / "stops.txt").read_bytes()
        (feed / "stops.txt").write_bytes(stops.replace("Cát".encode(), b"C\xe1t"))
        (problem,) = refusal(feed)
        assert (problem.file, problem.line, problem.field) == ("stops.txt", 0, "")
        assert problem.message.startswith("not UTF-8 text")

    def test_missing_file(self, tmp_path: Path) -> None:
        problems = refusal(hanoi_copy(tmp_path, fare_leg_rules=""))
        assert ("fare_leg_rules.txt", 0, "") in where(problems)
        assert "required file is missing" in str(problems[0])

    def test_a_file_with_only_its_header(self, tmp_path: Path) -> None:
        feed = hanoi_copy(tmp_path, fare_products="fare_product_id,amount,currency\n")
        problems = where(refusal(feed))
        assert ("fare_products.txt", 0, "") in problems
        assert ("fare_leg_rules.txt", 2, "fare_product_id") in problems  # now dangling

    def test_agencies_in_two_time_zones(self, tmp_path: Path) -> None:
        feed = edited(
            tmp_path,
            "agency",
            "Asia/Ho_Chi_Minh,vi,https://timbuyt",
            "Asia/Bangkok,vi,https://timbuyt",
        )
        assert where(refusal(feed)) == {("agency.txt", 3, "agency_timezone")}

    def test_missing_column(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "fare_media", "fare_media_type", "media_kind")
        assert where(refusal(feed)) == {("fare_media.txt", 1, "fare_media_type")}

    def test_dangling_reference(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "route_networks", "metro,3", "metro,3X")
        assert where(refusal(feed)) == {("route_networks.txt", 3, "route_id")}

    def test_dangling_product_in_a_leg_rule(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "fare_leg_rules", "BUS-SINGLE-SHORT", "BUS-SINGLE-TINY")
        (problem,) = refusal(feed)
        assert (problem.file, problem.field) == ("fare_leg_rules.txt", "fare_product_id")
        assert "'BUS-SINGLE-TINY' is not a fare_products.txt fare_product_id" in problem.message

    def test_overlapping_leg_rules(self, tmp_path: Path) -> None:
        """A second rule for the same network at the same priority: two fares for one leg."""
        rules = (HANOI / "fare_leg_rules.txt").read_text()
        extra = "bus,bus_short,,,,,BUS-SINGLE-MEDIUM,0\n"
        feed = hanoi_copy(tmp_path, fare_leg_rules=rules + extra)
        last = len(rules.splitlines()) + 1
        (problem,) = refusal(feed)
        assert (problem.file, problem.line, problem.field) == (
            "fare_leg_rules.txt",
            last,
            "fare_product_id",
        )
        assert "overlaps the rule of line" in problem.message

    def test_a_wildcard_rule_overlaps_at_the_same_priority(self, tmp_path: Path) -> None:
        fallback = "metro,metro,,,all_day,,METRO-FARE-16000,"
        feed = edited(tmp_path, "fare_leg_rules", fallback + "0", fallback + "1")
        problems = refusal(feed)
        assert {p.file for p in problems} == {"fare_leg_rules.txt"}
        assert len(problems) == 12 * 12 + 8 * 8  # every station pair rule of lines 2A and 3

    def test_negative_amount(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "fare_products", "TRANSFER-BUS,", "TRANSFER-BUS,")
        text = (feed / "fare_products.txt").read_text().replace(",5000,VND", ",-5000,VND")
        (feed / "fare_products.txt").write_text(text)
        line = next(
            n for n, row in enumerate(text.splitlines(), 1) if row.startswith("TRANSFER-BUS")
        )
        problems = refusal(feed)
        assert where(problems) == {("fare_products.txt", line, "amount")}
        assert "negative" in problems[0].message

    def test_bad_date(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "calendar", "20271231", "20270230")
        (problem,) = refusal(feed)
        assert (problem.file, problem.line, problem.field) == ("calendar.txt", 2, "end_date")

    def test_end_before_start(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "feed_info", "20271231", "20251231")
        assert where(refusal(feed)) == {("feed_info.txt", 2, "feed_end_date")}

    def test_another_currency(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "citypass_fare_caps", ",VND", ",USD")
        problems = refusal(feed)
        assert where(problems) == {("citypass_fare_caps.txt", 2, "currency")}
        assert "this platform prices in VND" in problems[0].message

    def test_a_vnd_feed_on_a_usd_platform(self) -> None:
        problems = refusal(HANOI, currency="USD")
        assert {p.file for p in problems} == {"fare_products.txt", "citypass_fare_caps.txt"}

    def test_fractions_of_a_dong(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "fare_products", ",8000,VND", ",8000.5,VND")
        assert where(refusal(feed)) == {("fare_products.txt", 2, "amount")}

    def test_overlapping_timeframes(self, tmp_path: Path) -> None:
        text = "timeframe_group_id,start_time,end_time,service_id\n"
        text += "all_day,00:00:00,24:00:00,DAILY\nall_day,07:00:00,09:00:00,DAILY\n"
        assert where(refusal(hanoi_copy(tmp_path, timeframes=text))) == {
            ("timeframes.txt", 3, "start_time")
        }

    def test_transfer_count_between_different_groups(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "fare_transfer_rules", "metro,bus,,", "metro,bus,2,")
        assert where(refusal(feed)) == {("fare_transfer_rules.txt", 3, "transfer_count")}

    def test_duration_limit_without_its_type(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "fare_transfer_rules", "bus,bus,1,3600,1,", "bus,bus,1,3600,,")
        assert where(refusal(feed)) == {("fare_transfer_rules.txt", 2, "duration_limit_type")}

    def test_duplicate_key_and_short_row(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "networks", "metro,", "bus_short,")
        (feed / "areas.txt").write_text(
            (feed / "areas.txt").read_text() + "lonely\n", encoding="utf-8"
        )
        found = where(refusal(feed))
        assert ("networks.txt", 3, "network_id") in found  # bus_short again: same key as line 2
        assert ("areas.txt", 22, "") in found

    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        feed = edited(tmp_path, "calendar", "20271231", "2027-12-31")
        (feed / "agency.txt").write_text(
            (feed / "agency.txt").read_text().replace("Asia/Ho_Chi_Minh", "Asia/Hanoi_City")
        )
        assert where(refusal(feed)) == {
            ("calendar.txt", 2, "end_date"),
            ("agency.txt", 2, "agency_timezone"),
            ("agency.txt", 3, "agency_timezone"),
        }
