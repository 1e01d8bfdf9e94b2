"""Vehicles registered to a wallet (by plate, RFID tag or account QR), and reading a plate."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from services.parking import plates, repository, tokens
from services.parking.context import Parking
from services.parking.repository import Record
from services.parking.schemas import VehicleCreate, VehicleRead
from services.parking.tariffs import VehicleType
from shared.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable
from shared.ids import new_id
from shared.payments_client import PaymentsRefused, PaymentsUnavailable

logger = logging.getLogger("citypass.parking")


def _vehicle_read(context: Parking, row: Record) -> VehicleRead:
    return VehicleRead(
        vehicle_id=row.vehicle_id,
        plate=row.plate,
        vehicle_type=VehicleType(row.vehicle_type),
        owner_id=row.owner_id,
        wallet_account_id=row.wallet_account_id,
        rfid_tag=row.rfid_tag,
        account_qr=tokens.account_qr(
            context.settings.token_secret.get_secret_value(), row.vehicle_id
        ),
        registered_at=row.registered_at,
    )


def parse_plate(raw: str) -> plates.Plate:
    try:
        return plates.normalise(raw)
    except plates.InvalidPlate as invalid:
        raise Unprocessable(str(invalid), code="invalid_plate") from None


async def register_vehicle(
    session: AsyncSession, context: Parking, body: VehicleCreate
) -> VehicleRead:
    """Register a plate to its owner's vehicle wallet (opened in payments if needed)."""
    plate = parse_plate(body.plate)
    rfid = body.rfid_tag.upper() if body.rfid_tag else None
    existing = await repository.vehicle_by_plate(session, plate.key)
    if existing is not None:
        if existing.owner_id == body.owner_id and existing.vehicle_type == body.vehicle_type.value:
            return _vehicle_read(context, existing)
        raise Conflict(f"{plate.display} is registered already.", code="plate_registered")
    try:
        wallet_id = await context.payments.open_vehicle_wallet(body.owner_id)
    except PaymentsUnavailable as error:
        logger.warning("no vehicle wallet for %s: %s", body.owner_id, error)
        raise ServiceUnavailable(
            "Payments cannot open the vehicle wallet now; retry.", code="payments_unavailable"
        ) from None
    except PaymentsRefused as refused:
        raise Unprocessable(refused.body.get("detail", str(refused)), code=refused.code) from None
    row = await repository.insert_vehicle(
        session,
        vehicle_id=new_id(),
        plate_key=plate.key,
        plate=plate.display,
        vehicle_type=body.vehicle_type.value,
        owner_id=body.owner_id,
        wallet_account_id=wallet_id,
        rfid_tag=rfid,
    )
    if row is None:
        raise Conflict("The plate or the RFID tag is registered already.", code="plate_registered")
    return _vehicle_read(context, row)


async def get_vehicle(
    session: AsyncSession, context: Parking, vehicle_id: uuid.UUID
) -> VehicleRead:
    row = await repository.get_vehicle(session, vehicle_id)
    if row is None:
        raise NotFound(f"No vehicle {vehicle_id}.", code="vehicle_not_found")
    return _vehicle_read(context, row)
