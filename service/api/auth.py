"""Who may call the service: the API key as a bearer header, or a browser session cookie.

A browser cannot send ``Authorization: Bearer``; the pages offer a small form that
exchanges the key for a session cookie instead: HttpOnly (no script reads it),
SameSite=Strict (no other site's request carries it), signed with the key
(HMAC-SHA256, so changing the key ends every session) and expiring after
``SESSION_HOURS``. A request that changes something (POST, DELETE) with the cookie
must also come from the service's own origin. Scripts and PACS keep the header.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from fastapi import Request

COOKIE = "lge_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_token(key: str, lifetime_s: float, now: float | None = None) -> str:
    expiry = int((time.time() if now is None else now) + lifetime_s)
    return f"{expiry}.{_signature(key, expiry)}"


def valid_session(key: str, token: str | None, now: float | None = None) -> bool:
    if not token or "." not in token:
        return False
    expiry_text, signature = token.split(".", 1)
    if not expiry_text.isdigit():
        return False
    expiry = int(expiry_text)
    return (expiry > (time.time() if now is None else now)
            and hmac.compare_digest(signature, _signature(key, expiry)))


def _signature(key: str, expiry: int) -> str:
    return hmac.new(key.encode(), f"session:{expiry}".encode(), hashlib.sha256).hexdigest()


def key_matches(given: str, key: str | None) -> bool:
    """The API key given (constant-time comparison); never with no key configured."""
    return bool(key) and hmac.compare_digest(given.encode(), key.encode())


def bearer_ok(request: Request, key: str) -> bool:
    given = request.headers.get("authorization", "")
    return given.startswith("Bearer ") and key_matches(given[7:], key)


def same_origin(request: Request) -> bool:
    """No Origin header (not a browser's cross-origin request), or this service's own."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = f"{request.url.scheme}://{request.url.netloc}"
    return origin.rstrip("/") == own


def authorised(request: Request, key: str | None) -> bool:
    if not key:
        return True
    if bearer_ok(request, key):
        return True
    if not valid_session(key, request.cookies.get(COOKIE)):
        return False
    return request.method in SAFE_METHODS or same_origin(request)
