"""``GET /ack-link/{token}`` and ``POST /ack-link/{token}``: acknowledge an alert from a signed link, no login.

The notifier puts a signed, expiring, one-use link in each notification of a fired alert (:mod:`pilotwatch.signing`).
``GET`` only shows what the link would acknowledge and a button: mail scanners and link previews fetch every
link in a message, and a GET that acknowledged would let them acknowledge alerts nobody read. ``POST``
redeems the token through :func:`pilotwatch.ack_links.redeem_ack_token`, which records the token's use and appends an
ACKNOWLEDGED transition to the alert engine's outbox in one transaction; the engine's store owns the alert row
and reacts to the transition like to any acknowledgement.

Answers: 200 acknowledged; 403 a forged or malformed token; 410 an expired or already used one; 404 an alert the
engine does not know (its store: ``PILOTWATCH_API_ALERTS_STATE_DIR``); 503 when ``PILOTWATCH_API_ACK_LINK_SECRET``
is not set.
"""

from __future__ import annotations

import html
import time
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from api.deps import SettingsDep
from api.settings import ApiSettings
from pilotwatch.ack_links import RedeemError, RedeemProblem, connect_alerts_db, redeem_ack_token
from pilotwatch.alerting import ALERT_STORE_FILE
from pilotwatch.signing import AckClaims, AckTokenError, TokenProblem, verify_ack_token

router = APIRouter(prefix="/ack-link", tags=["alerts"])

_TOKEN_STATUS = {
    TokenProblem.MALFORMED: status.HTTP_403_FORBIDDEN,
    TokenProblem.FORGED: status.HTTP_403_FORBIDDEN,
    TokenProblem.EXPIRED: status.HTTP_410_GONE,
}
_REDEEM_STATUS = {
    RedeemProblem.ALREADY_USED: status.HTTP_410_GONE,
    RedeemProblem.UNKNOWN_ALERT: status.HTTP_404_NOT_FOUND,
}


class AckLinkPublic(BaseModel):
    alert_id: str
    acknowledged_by: str
    transition_id: int


def _secret(settings: ApiSettings) -> str:
    if settings.ack_link_secret is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="acknowledge links are not configured: set PILOTWATCH_API_ACK_LINK_SECRET",
        )
    return settings.ack_link_secret.get_secret_value()


def _claims(settings: ApiSettings, token: str) -> AckClaims:
    try:
        return verify_ack_token(_secret(settings), token, time.time())
    except AckTokenError as exc:
        raise HTTPException(_TOKEN_STATUS[exc.problem], detail=str(exc)) from None


@router.get("/{token}", response_class=HTMLResponse)
def confirm_page(token: str, settings: SettingsDep) -> HTMLResponse:
    claims = _claims(settings, token)
    e = html.escape
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'><title>Acknowledge alert</title></head><body>"
        f"<h1>Acknowledge alert {e(claims.alert_id)}</h1>"
        f"<p>As {e(claims.recipient)}. This link works once.</p>"
        f"<form method='post' action='/ack-link/{e(token)}'><button type='submit'>Acknowledge</button></form>"
        "</body></html>"
    )


@router.post("/{token}", response_model=AckLinkPublic)
def acknowledge(
    token: str, settings: SettingsDep, accept: Annotated[str, Header()] = "application/json"
) -> AckLinkPublic | HTMLResponse:
    secret = _secret(settings)
    conn = connect_alerts_db(str(settings.alerts_state_dir / ALERT_STORE_FILE))
    try:
        redeemed = redeem_ack_token(conn, secret, token)
    except AckTokenError as exc:
        raise HTTPException(_TOKEN_STATUS[exc.problem], detail=str(exc)) from None
    except RedeemError as exc:
        raise HTTPException(_REDEEM_STATUS[exc.problem], detail=str(exc)) from None
    finally:
        conn.close()
    public = AckLinkPublic(
        alert_id=redeemed.claims.alert_id,
        acknowledged_by=redeemed.claims.recipient,
        transition_id=redeemed.transition_id,
    )
    if "text/html" in accept:
        return HTMLResponse(f"<!doctype html><p>Alert {html.escape(public.alert_id)} acknowledged. Thank you.</p>")
    return public
