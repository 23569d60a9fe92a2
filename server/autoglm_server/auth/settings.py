"""Settings of JWT authentication and its key sources (part of config.Settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class AuthSettings(BaseModel):
    """How calls are authenticated."""

    auth: Literal["enabled", "disabled"] = Field(
        "enabled", description="check a JWT on every call; 'disabled' is for local development only"
    )
