"""``GET /inbox``: the alert inbox, a plain server-rendered page — the open and acknowledged alerts of the
caller's scope, newest first, with acknowledge and resolve buttons (HTML forms, no front-end build).

The page signs in with an API key once (``POST /inbox/login``), kept in an HttpOnly, SameSite=Strict cookie
scoped to ``/inbox``; every action goes through the same scope and store as ``/alerts`` (:mod:`api.routes.alerts`).
``GET /inbox/stream`` is the alert stream for the page's own cookie; a small script reloads the page when an
alert in scope changes.
"""

from __future__ import annotations

import html
import time
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from api.deps import AlertScope, AlertStoreDep, KeyStoreDep, ManifestDep, alert_scope, from_ms
from api.keys import ApiKeyRecord
from api.routes.alerts import _transitions
from pilotwatch.alerting import TransitionKind

router = APIRouter(prefix="/inbox", tags=["inbox"], include_in_schema=False)
COOKIE = "pilotwatch_inbox"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pilotwatch · alert inbox</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #ddd; vertical-align: top; }}
.critical {{ color: #b00020; font-weight: 600; }} .warning {{ color: #a15c00; }} .info {{ color: #555; }}
form {{ display: inline; }} button {{ margin-right: .3rem; }} .muted {{ color: #777; }}
</style></head>
<body>
<h1>Alert inbox</h1>
{body}
</body></html>
"""

LOGIN = """<p>Sign in with the API key from <code>pilotwatch api keys add</code>.</p>
<form method="post" action="/inbox/login"><label>API key <input type="password" name="key" id="key"
autocomplete="off" required></label> <button type="submit" id="login">Open the inbox</button></form>{error}"""

LIVE = """<script>
(function () {{
  var source = new EventSource("/inbox/stream?after={after}");
  source.onmessage = function () {{ window.location.reload(); }};
  ["fired", "acknowledged", "assigned", "commented", "resolved", "closed"].forEach(function (name) {{
    source.addEventListener(name, function () {{ source.close(); window.location.reload(); }});
  }});
}})();
</script>"""


def _key(keys: Any, cookie: str | None) -> ApiKeyRecord | None:
    return keys.authenticate(cookie) if cookie else None


def _scope(manifest: Any, key: ApiKeyRecord) -> AlertScope:
    return alert_scope(manifest, key)


def _row(a: dict[str, Any], can_act: bool) -> str:
    e = html.escape
    fired = from_ms(int(a["fired_ms"])).strftime("%Y-%m-%d %H:%M UTC")
    where = " / ".join(x for x in (a["city"], a["site"], a["device"], a["sensor"]) if x)
    buttons = ""
    if can_act:
        aid = e(a["alert_id"])
        form = '<form method="post" action="/inbox/alerts/{}/{}"><button data-action="{}">{}</button></form>'
        if a["status"] == "open":
            buttons += form.format(aid, "ack", "ack", "Acknowledge")
        buttons += form.format(aid, "resolve", "resolve", "Resolve")
    ack = f'<br><span class="muted">by {e(a["ack_by"])}</span>' if a["ack_by"] else ""
    silenced = ' <span class="muted">(silenced)</span>' if a["silenced"] else ""
    return (
        f'<tr data-alert="{e(a["alert_id"])}"><td>{fired}</td><td class="{e(a["severity"])}">{e(a["severity"])}</td>'
        f"<td>{e(a['kind'])}</td><td>{e(a['title'])}{silenced}</td><td>{e(where)}</td>"
        f'<td class="status">{e(a["status"])}{ack}</td><td>{buttons}</td></tr>'
    )


@router.get("", response_class=HTMLResponse)
def inbox(
    keys: KeyStoreDep,
    manifest: ManifestDep,
    alerts: AlertStoreDep,
    pilotwatch_inbox: Annotated[str | None, Cookie()] = None,
) -> HTMLResponse:
    key = _key(keys, pilotwatch_inbox)
    if key is None:
        return HTMLResponse(PAGE.format(body=LOGIN.format(error="")))
    scope = _scope(manifest, key)
    where, params = scope.sql()
    rows = alerts.query(f"{where} AND status IN ('open', 'acknowledged')", params, limit=500)
    after = alerts.last_transition_id()  # the page's stream starts after what the page shows
    head = (
        f'<p class="muted">Signed in as {html.escape(key.name)} ({key.role.value}). {len(rows)} open alert(s), '
        'newest first. <form method="post" action="/inbox/logout"><button>Sign out</button></form></p>'
    )
    if rows:
        table = (
            "<table><thead><tr><th>fired</th><th>severity</th><th>kind</th><th>alert</th><th>where</th>"
            "<th>status</th><th></th></tr></thead><tbody>"
            + "".join(_row(a, scope.can_act) for a in rows)
            + "</tbody></table>"
        )
    else:
        table = '<p id="empty">No open alerts in your scope.</p>'
    return HTMLResponse(PAGE.format(body=head + table + LIVE.format(after=after)))


@router.post("/login")
def login(keys: KeyStoreDep, key: Annotated[str, Form()]) -> Response:
    if keys.authenticate(key) is None:
        body = LOGIN.format(error='<p class="critical" id="error">That key is not valid.</p>')
        return HTMLResponse(PAGE.format(body=body), status_code=status.HTTP_401_UNAUTHORIZED)
    response = RedirectResponse("/inbox", status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/inbox")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/inbox", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/inbox")
    return response


@router.post("/alerts/{alert_id}/{action}")
def act(  # noqa: PLR0917  # FastAPI passes path, dependencies and cookie by name
    alert_id: str,
    action: str,
    keys: KeyStoreDep,
    manifest: ManifestDep,
    alerts: AlertStoreDep,
    pilotwatch_inbox: Annotated[str | None, Cookie()] = None,
) -> Response:
    key = _key(keys, pilotwatch_inbox)
    if key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="sign in to the inbox first")
    what = {"ack": TransitionKind.ACKNOWLEDGED, "resolve": TransitionKind.RESOLVED}.get(action)
    if what is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown action {action!r}; use ack or resolve")
    scope = _scope(manifest, key)
    found = alerts.get(alert_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown alert {alert_id!r}")
    if not scope.sees(found["kind"], found["city"], found["site"]) or not scope.can_act:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"key {key.name!r} may not {action} alert {alert_id!r}")
    try:
        alerts.act(alert_id, what, key.name, int(time.time() * 1000))
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return RedirectResponse("/inbox", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/stream")
async def stream(  # noqa: PLR0917  # FastAPI passes them by name
    request: Request,
    keys: KeyStoreDep,
    manifest: ManifestDep,
    alerts: AlertStoreDep,
    after: int = 0,
    pilotwatch_inbox: Annotated[str | None, Cookie()] = None,
) -> StreamingResponse:
    key = _key(keys, pilotwatch_inbox)
    if key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="sign in to the inbox first")
    return StreamingResponse(
        _transitions(request, alerts, _scope(manifest, key), after, follow=True), media_type="text/event-stream"
    )
