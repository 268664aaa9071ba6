"""Random secrets (upstream tokens, API keys) and the digests the store keeps of them."""

from __future__ import annotations

import hashlib
import secrets


def new_secret(prefix: str) -> str:
    """A URL-safe secret with 256 bits of randomness, prefixed so people can tell kinds apart."""
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
