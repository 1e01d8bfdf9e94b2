"""Fare products as data, from the public Hanoi figures in DESIGN.md (pure, no I/O)."""

from __future__ import annotations

from services.ticketing.schemas import Mode, ProductKind, ProductRead, RiderCategory
from shared.network import BUS_FARE_BANDS, BUS_ROUTES

ALL = list(RiderCategory)
PAYING = [RiderCategory.regular, RiderCategory.student, RiderCategory.worker]
CONCESSION = [RiderCategory.student, RiderCategory.worker]
FREE = [
    RiderCategory.elderly,
    RiderCategory.child,
    RiderCategory.merit,
    RiderCategory.disabled,
    RiderCategory.poor_household,
]


def _product(
    code: str,
    name_vi: str,
    name_en: str,
    mode: Mode,
    kind: ProductKind,
    price: int,
    categories: list[RiderCategory],
    *,
    days: int | None = None,
    rides: int | None = None,
    lines: list[str] | None = None,
    distance_priced: bool = False,
    line_choice: bool = False,
    credential_code: str,
) -> ProductRead:
    return ProductRead(
        code=code,
        name_vi=name_vi,
        name_en=name_en,
        mode=mode,
        kind=kind,
        price_vnd=price,
        categories=categories,
        validity_days=days,
        rides=rides,
        lines=lines or [],
        distance_priced=distance_priced,
        line_choice=line_choice,
        credential_code=credential_code,
    )


BAND_CODES = {"short": "BSS", "medium": "BSM", "long": "BSL", "express": "BSX"}


def catalogue() -> list[ProductRead]:
    """Every product on sale. A bus fare band without routes sells no single ticket."""
    products = [
        _product(
            f"BUS-SINGLE-{band.upper()}",
            f"Vé lượt xe buýt ({band})",
            f"Bus single ride ({band} route)",
            Mode.bus,
            ProductKind.single,
            fare,
            PAYING,
            days=1,
            rides=1,
            lines=[r.code for r in BUS_ROUTES if r.fare_band == band],
            credential_code=BAND_CODES[band],
        )
        for band, _, fare in BUS_FARE_BANDS
        if any(r.fare_band == band for r in BUS_ROUTES)
    ]
    products += [
        _product(
            "BUS-MONTH-ROUTE",
            "Vé tháng 1 tuyến",
            "Bus monthly, one route",
            Mode.bus,
            ProductKind.pass_,
            140_000,
            [RiderCategory.regular],
            days=30,
            line_choice=True,
            credential_code="BMR",
        ),
        _product(
            "BUS-MONTH-ROUTE-C",
            "Vé tháng 1 tuyến (ưu tiên)",
            "Bus monthly, one route (concession)",
            Mode.bus,
            ProductKind.pass_,
            70_000,
            CONCESSION,
            days=30,
            line_choice=True,
            credential_code="BMRC",
        ),
        _product(
            "BUS-MONTH-ALL",
            "Vé tháng liên tuyến",
            "Bus monthly, all routes",
            Mode.bus,
            ProductKind.pass_,
            280_000,
            [RiderCategory.regular],
            days=30,
            credential_code="BMA",
        ),
        _product(
            "BUS-MONTH-ALL-C",
            "Vé tháng liên tuyến (ưu tiên)",
            "Bus monthly, all routes (concession)",
            Mode.bus,
            ProductKind.pass_,
            140_000,
            CONCESSION,
            days=30,
            credential_code="BMAC",
        ),
        _product(
            "METRO-SINGLE",
            "Vé lượt metro",
            "Metro single ride (distance fare)",
            Mode.metro,
            ProductKind.single,
            0,
            PAYING,
            days=1,
            rides=1,
            distance_priced=True,
            credential_code="MS",
        ),
        _product(
            "METRO-DAY",
            "Vé ngày metro",
            "Metro day pass",
            Mode.metro,
            ProductKind.pass_,
            40_000,
            PAYING,
            days=1,
            credential_code="MD",
        ),
        _product(
            "METRO-WEEK",
            "Vé tuần metro",
            "Metro week pass",
            Mode.metro,
            ProductKind.pass_,
            160_000,
            PAYING,
            days=7,
            credential_code="MW",
        ),
        _product(
            "METRO-MONTH",
            "Vé tháng metro",
            "Metro month pass",
            Mode.metro,
            ProductKind.pass_,
            280_000,
            [RiderCategory.regular],
            days=30,
            credential_code="MM",
        ),
        _product(
            "METRO-MONTH-C",
            "Vé tháng metro (ưu tiên)",
            "Metro month pass (priority)",
            Mode.metro,
            ProductKind.pass_,
            140_000,
            CONCESSION,
            days=30,
            credential_code="MMC",
        ),
        _product(
            "STORED-VALUE",
            "Ví trả theo lượt",
            "Stored value, pay as you go",
            Mode.any,
            ProductKind.stored_value,
            0,
            PAYING,
            days=365,
            distance_priced=True,
            credential_code="SV",
        ),
        _product(
            "FREE-PASS",
            "Thẻ miễn phí",
            "Free travel pass (priority categories)",
            Mode.any,
            ProductKind.pass_,
            0,
            FREE,
            days=365,
            credential_code="FP",
        ),
    ]
    return products
