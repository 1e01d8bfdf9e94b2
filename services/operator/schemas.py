from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Role(StrEnum):
    viewer = "viewer"
    admin = "admin"


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")
    password: str = Field(min_length=1, max_length=256)


class SessionRead(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires")
    role: Role


class OperatorRead(BaseModel):
    username: str
    role: Role
