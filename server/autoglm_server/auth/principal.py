"""Who made a call: the verified subject, its tenant and its scopes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    # The `tenant` claim, or the subject when the token has none (per-tenant accounting and logs).
    tenant: str
    scopes: frozenset[str]
