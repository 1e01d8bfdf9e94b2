"""The network and its fares as data: GTFS + GTFS-Fares v2 feeds, their pricing and capping.

`feed.read_feed` reads and validates a feed; `tariff.Tariff` prices a leg; `ledger.RiderLedger`
keeps one stored-value rider's journeys, transfers and caps. Pure Python, no I/O but reading.
"""
