"""HTTP routes of the network and fare versions: operators import, everyone reads (GTFS is
public data)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime
from starlette.responses import Response

from services.ticketing.auth import SettingsDep, operator
from services.ticketing.endpoints import NetworkDep
from services.ticketing.schemas import NetworkRead, NetworkVersionList, NetworkVersionRead
from services.ticketing.service import network as versions
from services.ticketing.tables import idempotency_keys
from shared.app import RuntimeDep
from shared.auth import INVALID_TOKEN
from shared.errors import problems
from shared.idempotency import Idempotency, IdempotencyDep
from shared.ids import utcnow

router = APIRouter(prefix="/v1/network", tags=["network"])

ZIP = "application/zip"
BINARY = {"schema": {"type": "string", "format": "binary"}}
ZIP_BODY = {"content": {ZIP: BINARY}}
UPLOAD = {"content": {ZIP: BINARY, "application/octet-stream": BINARY}}  # the same zip


@router.post(
    "/versions",
    response_model=NetworkVersionRead,
    status_code=201,
    dependencies=[Depends(operator)],
    openapi_extra={"requestBody": {"required": True, **UPLOAD}},
    responses={
        200: {
            "description": "This feed already takes effect at this instant",
            "model": NetworkVersionRead,
        },
        **problems(
            (400, "`idempotency_key_missing`"),
            INVALID_TOKEN,
            (
                409,
                "`effective_from_in_past` (what happened since was priced already), "
                "`effective_from_taken` (another feed starts then) or "
                "`idempotency_key_in_flight`",
            ),
            (
                422,
                "`invalid_feed`: nothing stored; `problems` lists each as {file, line, field, "
                "message} (line 1 is the header, 0 the file itself); or `idempotency_key_reused`",
            ),
        ),
    },
)
async def import_version(
    request: Request,
    key: IdempotencyDep,
    rt: RuntimeDep,
    settings: SettingsDep,
    network: NetworkDep,
    effective_from: Annotated[
        AwareDatetime | None,
        Query(description="ISO 8601 instant with its offset; default now"),
    ] = None,
) -> Response:
    """Import a GTFS + GTFS-Fares v2 feed (a zip, `Content-Type: application/zip`) as a new
    version of the network and its fares, taking effect at `effective_from`.

    The feed is checked whole (`docs/fares.md` lists what is refused): a bad feed stores
    nothing and answers 422 with every problem. Amounts must be in the platform's currency
    (`TICKETING_CURRENCY`, VND). A version cannot start in the past (a minute of clock
    difference aside), nor at the instant another starts. Every replica and every service
    prices with it from that instant on, without a restart. Importing the same feed for the
    same instant again answers 200 with that version; send an `Idempotency-Key` to retry an
    import without `effective_from` safely.
    """
    upload = await request.body()
    prepared = await asyncio.to_thread(versions.prepare_feed, upload, settings.currency)
    # The key's fingerprint covers the body; the instant asked for is part of the request too.
    asked = (request.query_params.get("effective_from") or "").encode()
    fingerprint = hashlib.sha256(key.fingerprint.encode() + b"\0" + asked).hexdigest()
    key = dataclasses.replace(key, fingerprint=fingerprint)
    async with Idempotency(rt.db, idempotency_keys).call(key) as call:
        if call.replay is not None:
            return call.replay
        now = utcnow()
        version, created = await versions.import_version(
            call.session,
            prepared,
            effective_from or now,
            now,
            settings.network_backdate_tolerance,
        )
        answer = await call.respond(201 if created else 200, version)
    await network.refresh()
    return answer


@router.get("", response_model=NetworkRead, responses=problems((503, "`network_not_loaded`")))
async def network_in_force(network: NetworkDep) -> NetworkRead:
    """The network in force now, for a rider's app: operators, lines (with their mode) and
    stations (with the lines that call there). The same data as the version's GTFS feed."""
    return versions.network_read(network.versions.current())


@router.get("/versions", response_model=NetworkVersionList)
async def list_versions(rt: RuntimeDep) -> NetworkVersionList:
    """Every version of the network and its fares, oldest effective first. The one in force
    at an instant is the last that started at or before it. Services keep a copy: they
    download each version's feed once and check it against `sha256`."""
    async with rt.db.transaction() as session:
        return await versions.list_versions(session)


@router.get(
    "/versions/{version_id}/feed",
    response_class=Response,
    responses={
        200: {"description": "The feed as a zip (its sha256 is the version's)", **ZIP_BODY},
        **problems((404, "`network_version_not_found`")),
    },
)
async def version_feed(version_id: uuid.UUID, rt: RuntimeDep) -> Response:
    """The version's GTFS feed, a zip of its files as imported (rewritten canonically:
    columns and rows as read, files in reference order)."""
    async with rt.db.transaction() as session:
        data = await versions.version_feed(session, version_id)
    disposition = f'attachment; filename="network-{version_id}.zip"'
    return Response(data, media_type=ZIP, headers={"Content-Disposition": disposition})
