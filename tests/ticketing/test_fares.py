"""Fare products from the network version in force, and credential contents (pure: no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from services.ticketing import credentials
from services.ticketing.schemas import Mode, ProductRead, PurchaseCreate, RiderCategory
from services.ticketing.service import products, purchases
from shared import ticketcodec
from shared.errors import Unprocessable
from shared.fares.feed import read_feed
from shared.fares.versions import NetworkVersion, NetworkVersions, NoNetwork

FEED = read_feed()
VERSIONS = NetworkVersions([NetworkVersion("hanoi", datetime(2000, 1, 1, tzinfo=UTC), "", FEED)])
CATALOGUE = products.catalogue(VERSIONS, datetime.now(UTC))


def longest_choice(product: ProductRead) -> list[str]:
    if not product.line_choice:
        return list(product.lines)
    return [max(products.line_choices(FEED, product.mode), key=len)]


class TestCatalogue:
    def test_codes_are_unique(self) -> None:
        assert len({p.code for p in CATALOGUE}) == len(CATALOGUE)
        assert len({p.credential_code for p in CATALOGUE}) == len(CATALOGUE)

    @pytest.mark.parametrize("product", CATALOGUE, ids=lambda p: p.code)
    def test_every_credential_fits_a_version_11_qr(self, product: ProductRead) -> None:
        """With the longest kid the service will ever use and the widest line choice."""
        credential = credentials.build(
            kid=credentials.kid_for(9999),
            ticket_id=uuid.uuid4(),
            credential_code=product.credential_code,
            category=product.categories[0],
            valid_from=2**32 - 2,
            valid_until=2**32 - 1,
            lines=credentials.scope(product.mode, longest_choice(product)),
            device_key=bytes(range(32)),
        )
        encoded = ticketcodec.encode_credential(credential)
        assert len(encoded) <= ticketcodec.MAX_CREDENTIAL_BYTES

    def test_free_products_cost_nothing_and_only_concessions_buy_them(self) -> None:
        free = next(p for p in CATALOGUE if p.code == "FREE-PASS")
        assert free.price_vnd == 0
        assert RiderCategory.regular not in free.categories

    def test_one_line_products_choose_among_the_routes_of_their_mode(self) -> None:
        assert products.line_choices(FEED, Mode.metro) == {"2A", "3"}
        assert products.line_choices(FEED, Mode.bus) == {"01", "09", "32", "86"}

    def test_no_version_in_force_is_a_503(self) -> None:
        with pytest.raises(NoNetwork) as refused:
            products.catalogue(NetworkVersions(), datetime.now(UTC))
        assert (refused.value.status, refused.value.code) == (503, "network_not_loaded")


class TestCredentialContents:
    def test_scope_names_the_lines_or_the_modes_wildcard(self) -> None:
        assert credentials.scope(Mode.bus, ["32"]) == ("32",)
        assert credentials.scope(Mode.metro, []) == ("METRO",)
        assert credentials.scope(Mode.bus, []) == ("BUS",)
        assert credentials.scope(Mode.any, []) == ("*",)

    def test_window_is_cut_to_the_credential_lifetime(self) -> None:
        now = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
        month = (now, now + timedelta(days=30))
        start, end = credentials.window(*month, now + timedelta(days=10), timedelta(days=3))
        assert (start, end) == (
            credentials.unix(now),
            credentials.unix(now + timedelta(days=13)),
        )
        day = (now, now + timedelta(days=1))
        assert credentials.window(*day, now, timedelta(days=3))[1] == credentials.unix(day[1])

    def test_categories_map_onto_the_codec(self) -> None:
        for category in RiderCategory:
            assert credentials.codec_category(category).name == category.name.upper()

    def test_sale_check_refuses_what_no_qr_could_carry(self) -> None:
        product = CATALOGUE[0].model_copy(update={"credential_code": "X" * 30})
        rider: Any = SimpleNamespace(category=product.categories[0].value)
        with pytest.raises(Unprocessable) as refused:
            purchases._check_sellable(
                rider, product, PurchaseCreate(product_code=product.code), FEED
            )
        assert refused.value.code == "product_not_issuable"
