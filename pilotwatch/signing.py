"""Webhook signatures and signed acknowledge tokens: HMAC-SHA256, compared in constant time.

Webhook: the receiver gets ``X-Pilotwatch-Timestamp: <unix seconds>`` and
``X-Pilotwatch-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``. Signing the timestamp with the body
lets a receiver refuse a replay of an old request (:data:`WEBHOOK_TOLERANCE_S`) as well as a forged one.

Acknowledge token: ``v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(secret, "v1." + claims))>``; the claims
name the alert, the recipient it was sent to, an expiry and a random token id. The token id makes each link
usable once: whoever redeems it records the id (:func:`pilotwatch.ack_links.redeem_ack_token`).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

SIGNATURE_HEADER = "X-Pilotwatch-Signature"
TIMESTAMP_HEADER = "X-Pilotwatch-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SCHEMA_HEADER = "X-Pilotwatch-Schema"
SIGNATURE_VERSION = "v1"
# Five minutes, the common choice of webhook senders: wide enough for clock skew, narrow for replays.
WEBHOOK_TOLERANCE_S = 300
ACK_TOKEN_VERSION = "v1"  # noqa: S105  (a format version, not a secret)


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify_webhook(secret: str, timestamp: str, signature: str, body: bytes, now_s: float) -> bool:
    """What a receiver does: a well-formed, fresh timestamp and a matching signature, or refuse."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now_s - ts) > WEBHOOK_TOLERANCE_S:
        return False
    return hmac.compare_digest(webhook_signature(secret, ts, body), signature)


class TokenProblem(enum.StrEnum):
    MALFORMED = "malformed"
    FORGED = "forged"
    EXPIRED = "expired"


class AckTokenError(ValueError):
    def __init__(self, problem: TokenProblem, detail: str) -> None:
        self.problem = problem
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class AckClaims:
    alert_id: str
    recipient: str
    expires_s: int
    token_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, signed: str) -> bytes:
    return hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()


def sign_ack_token(secret: str, alert_id: str, recipient: str, expires_s: int, token_id: str | None = None) -> str:
    claims = {"a": alert_id, "r": recipient, "e": int(expires_s), "n": token_id or secrets.token_urlsafe(12)}
    signed = f"{ACK_TOKEN_VERSION}.{_b64(json.dumps(claims, separators=(',', ':'), sort_keys=True).encode())}"
    return f"{signed}.{_b64(_mac(secret, signed))}"


def verify_ack_token(secret: str, token: str, now_s: float) -> AckClaims:
    """The claims of a genuine, unexpired token, or :class:`AckTokenError` saying which of the three it is not."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != ACK_TOKEN_VERSION:
        raise AckTokenError(TokenProblem.MALFORMED, f"not a {ACK_TOKEN_VERSION} acknowledge token")
    signed = f"{parts[0]}.{parts[1]}"
    try:
        given = _unb64(parts[2])
        raw = _unb64(parts[1])
    except (binascii.Error, ValueError):
        raise AckTokenError(TokenProblem.MALFORMED, "the token is not valid base64url") from None
    # Check the signature before reading the claims: nothing an attacker wrote is interpreted unverified.
    if not hmac.compare_digest(_mac(secret, signed), given):
        raise AckTokenError(TokenProblem.FORGED, "the token's signature does not match")
    try:
        claims = json.loads(raw)
        parsed = AckClaims(str(claims["a"]), str(claims["r"]), int(claims["e"]), str(claims["n"]))
    except (ValueError, KeyError, TypeError):
        raise AckTokenError(TokenProblem.MALFORMED, "the token's claims cannot be read") from None
    if now_s >= parsed.expires_s:
        raise AckTokenError(TokenProblem.EXPIRED, "this acknowledge link has expired")
    return parsed
