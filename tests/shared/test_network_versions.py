"""Which network version is in force at an instant, and what NetworkSync keeps (pure: a source
in memory; tests/ticketing/test_network.py runs NetworkSync against a real ticketing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.fares.feed import HANOI, feed_zip, read_feed
from shared.fares.reader import FeedRejected
from shared.fares.versions import (
    NetworkSync,
    NetworkVersion,
    NetworkVersions,
    NoNetwork,
    VersionListing,
    feed_digest,
    parse_listing,
)

FEED = read_feed(HANOI)
DATA = feed_zip(FEED)
JAN = datetime(2027, 1, 1, tzinfo=UTC)
FEB = datetime(2027, 2, 1, tzinfo=UTC)


class TestInForce:
    versions = NetworkVersions(
        [NetworkVersion("feb", FEB, "", FEED), NetworkVersion("jan", JAN, "", FEED)]
    )

    def test_a_version_applies_from_its_first_instant(self) -> None:
        assert self.versions.at(FEB - timedelta(microseconds=1)).id == "jan"
        assert self.versions.at(FEB).id == "feb"
        assert self.versions.at(FEB + timedelta(days=900)).id == "feb"

    def test_before_the_first_version_nothing_is_in_force(self) -> None:
        with pytest.raises(NoNetwork) as refused:
            self.versions.at(JAN - timedelta(seconds=1))
        assert (refused.value.status, refused.value.code) == (503, "network_not_loaded")

    def test_a_listing_reads_z_times(self) -> None:
        payload = {
            "versions": [{"id": "a", "effective_from": "2027-01-01T00:00:00Z", "sha256": "x"}]
        }
        assert parse_listing(payload) == [VersionListing("a", JAN, "x")]
        with pytest.raises(ValueError, match="not a network version listing"):
            parse_listing({"items": []})


class MemorySource:
    def __init__(self, versions: dict[str, tuple[datetime, bytes]]) -> None:
        self.versions = versions
        self.feeds_read: list[str] = []

    async def listing(self) -> list[VersionListing]:
        return [
            VersionListing(vid, start, feed_digest(data))
            for vid, (start, data) in self.versions.items()
        ]

    async def feed(self, version_id: str) -> bytes:
        self.feeds_read.append(version_id)
        return self.versions[version_id][1]


class TestSync:
    async def test_each_feed_is_read_once_and_a_dropped_version_goes(self) -> None:
        source = MemorySource({"jan": (JAN, DATA)})
        sync = NetworkSync(source, currency="VND")
        first = await sync.refresh()
        assert await sync.refresh() is first
        source.versions["feb"] = (FEB, DATA)
        assert [v.id for v in await sync.refresh()] == ["jan", "feb"]
        assert source.feeds_read == ["jan", "feb"]
        del source.versions["jan"]
        assert [v.id for v in await sync.refresh()] == ["feb"]

    async def test_a_feed_in_another_currency_is_refused(self) -> None:
        sync = NetworkSync(MemorySource({"jan": (JAN, DATA)}), currency="USD")
        with pytest.raises(FeedRejected) as refused:
            await sync.refresh()
        assert "this platform prices in USD" in str(refused.value)
        assert len(sync.versions) == 0
