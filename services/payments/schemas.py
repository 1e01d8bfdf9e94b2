from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import BaseModel, Field


class AccountKind(StrEnum):
    rider_wallet = "rider_wallet"
    vehicle_wallet = "vehicle_wallet"


class AccountCreate(BaseModel):
    kind: AccountKind
    owner_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")


class AccountRead(BaseModel):
    id: uuid.UUID
    code: str
    kind: str
    owner_id: str | None
    balance: int = Field(description="Available balance in VND")
    currency: str = "VND"
