"""Bearer tokens from an environment variable: `NAME:TOKEN` or `TOKEN`, several separated by commas.

Shared by the LangGraph server's auth (`MEMENTO_API_TOKEN`) and the MCP servers over HTTP
(`MEMENTO_MCP_TOKEN`). An entry `NAME:TOKEN` gives its holder the identity NAME; a bare token the
identity `caller-` plus a hash of it, so a token never becomes an identity that is stored or
logged. Tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac


def accepted_tokens(raw: str | None) -> dict[str, str]:
    """token -> identity, from the variable's value."""
    tokens: dict[str, str] = {}
    for entry in (raw or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, token = entry.partition(":")
        if not sep:
            name, token = "", entry
        token = token.strip()
        if token:
            tokens[token] = name.strip() or "caller-" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]
    return tokens


def bearer_identity(authorization: str | None, tokens: dict[str, str]) -> str | None:
    """The identity of the token in an `Authorization: Bearer TOKEN` header, or None."""
    scheme, _, presented = (authorization or "").strip().partition(" ")
    presented = presented.strip().encode("utf-8")
    if scheme.lower() != "bearer" or not presented:
        return None
    found = None
    for token, name in tokens.items():  # every token compared, so the time says nothing about which matched
        if hmac.compare_digest(token.encode("utf-8"), presented):
            found = name
    return found
