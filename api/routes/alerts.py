"""Alerts and silences: ``GET /alerts`` (filtered, paginated), ``GET /alerts/{id}`` (with the readings and QC
flags behind it), ``POST /alerts/{id}/ack|resolve|close|assign|comment``, ``GET /alerts/stream`` (server-sent
events of alert changes) and ``GET|POST /silences``, ``DELETE /silences/{id}``.

Scope (:class:`api.deps.AlertScope`): a key sees the alert kinds the manifest's alert routes give its role, in the
cities and sites of its scope — city staff their city's pollution and limit alerts, operators their devices'
alerts; evaluators read only. The store is the alert engine's SQLite database; the routes read it and record
people's actions with their outbox transitions (:meth:`alerts.store.AlertStore.act`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi import Path as FastApiPath
from fastapi.responses import StreamingResponse

from alerts.store import AlertStatus
from api.deps import (
    ActingScope,
    AlertScopeDep,
    AlertStoreDep,
    CurrentKey,
    ManifestDep,
    ScopedAlert,
    SettingsDep,
    StoreDep,
    from_ms,
    parse_time,
    to_ms,
)
from api.models import (
    AlertActionBody,
    AlertAssignBody,
    AlertCommentBody,
    AlertDetailPublic,
    AlertPublic,
    AlertReadingsPublic,
    AlertsPublic,
    CommentPublic,
    NotificationPublic,
    SeriesPointPublic,
    SilenceCreate,
    SilencePublic,
)
from notify.store import deliveries_for_alert
from pilotwatch.alerting import TransitionKind
from pilotwatch.manifest import AlertKind, Role

router = APIRouter(tags=["alerts"])

SQLITE_MAX_INT = 2**63 - 1  # ids are SQLite integers: a larger number can name nothing, and SQLite cannot bind it
SilenceId = Annotated[int, FastApiPath(ge=1, le=SQLITE_MAX_INT, description="id of the silence")]

MAX_PAGE = 500
READINGS_MARGIN_MS = 30 * 60_000
SSE_POLL_S = 0.5


def alert_public(a: dict[str, Any]) -> AlertPublic:
    return AlertPublic(
        alert_id=a["alert_id"],
        rule=a["rule"],
        kind=a["kind"],
        city=a["city"],
        site=a["site"],
        device=a["device"],
        sensor=a["sensor"],
        severity=a["severity"],
        title=a["title"],
        status=a["status"],
        firing=bool(a["firing"]),
        silenced=bool(a["silenced"]),
        episode_start=from_ms(int(a["episode_ms"])),
        fired=from_ms(int(a["fired_ms"])),
        resolved=from_ms(int(a["resolved_ms"])) if a["resolved_ms"] is not None else None,
        ack_by=a["ack_by"],
        ack_time=from_ms(int(a["ack_ms"])) if a["ack_ms"] is not None else None,
        assignee=a["assignee"],
        value=a["value"],
        body=a["body"],
    )


@router.get("/alerts", response_model=AlertsPublic)
def list_alerts(
    *,
    alerts: AlertStoreDep,
    scope: AlertScopeDep,
    city: Annotated[str | None, Query(description="city id")] = None,
    site: Annotated[str | None, Query(description="site id")] = None,
    kind: Annotated[AlertKind | None, Query(description="pollution, limit_exceedance, device, bin_overflow")] = None,
    state: Annotated[str | None, Query(description="open, acknowledged, resolved or closed")] = None,
    start: Annotated[str | None, Query(description="fired at or after (ISO 8601 with offset)")] = None,
    end: Annotated[str | None, Query(description="fired before (ISO 8601 with offset)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=SQLITE_MAX_INT, description="alerts to skip (newest first)")] = 0,
) -> AlertsPublic:
    if state is not None and state not in AlertStatus.ALL:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"query parameter 'state': {state!r} is not one of {', '.join(AlertStatus.ALL)}",
        )
    where, params = scope.sql()
    clauses: list[str] = [where]
    values: list[str | int] = list(params)
    for column, value in (("city", city), ("site", site), ("kind", kind.value if kind else None), ("status", state)):
        if value is not None:
            clauses.append(f"{column} = ?")
            values.append(value)
    if start is not None:
        clauses.append("fired_ms >= ?")
        values.append(to_ms(parse_time("start", start)))
    if end is not None:
        clauses.append("fired_ms < ?")
        values.append(to_ms(parse_time("end", end)))
    rows = alerts.query(" AND ".join(clauses), tuple(values), limit=limit, offset=offset)
    return AlertsPublic(data=[alert_public(a) for a in rows], count=len(rows), limit=limit, offset=offset)


async def _transitions(request: Request, alerts: Any, scope: Any, after: int, follow: bool) -> AsyncIterator[bytes]:
    last = after
    while True:
        batch = alerts.transitions_after(last, 500)
        for t in batch:
            last = int(t.id)
            if not scope.sees(t.kind.value, t.city, t.site):
                continue
            data = {
                "id": t.id,
                "alert_id": t.alert_id,
                "transition": t.transition.value,
                "kind": t.kind.value,
                "city": t.city,
                "site": t.site,
                "device": t.device,
                "severity": t.severity.value,
                "time": from_ms(t.t_ms).isoformat(),
                "silenced": t.silenced,
                "title": t.body.get("title", ""),
            }
            yield f"id: {t.id}\nevent: {t.transition.value}\ndata: {json.dumps(data)}\n\n".encode()
        if len(batch) == 500:
            continue
        if not follow or await request.is_disconnected():
            return
        yield b": keep-alive\n\n"
        await asyncio.sleep(SSE_POLL_S)


SSE_EVENT: dict[str, object] = {
    "type": "object",
    "description": "one server-sent event (OpenAPI 3.1: the schema of an event stream describes each event)",
    "properties": {
        "id": {"type": "string", "description": "the transition's id; send it back as Last-Event-ID to resume"},
        "event": {"type": "string", "enum": [t.value for t in TransitionKind], "description": "the transition"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "the change as JSON: id, alert_id, transition, kind, city, site, device, severity, "
            "time, silenced, title",
        },
    },
    "required": ["id", "event", "data"],
}


class EventStream(StreamingResponse):
    """Server-sent events; named so the OpenAPI document says ``text/event-stream``."""

    media_type = "text/event-stream"


@router.get(
    "/alerts/stream",
    response_class=EventStream,
    responses={
        200: {"description": "one event per alert change", "content": {"text/event-stream": {"schema": SSE_EVENT}}}
    },
)
async def alert_stream(  # noqa: PLR0917  # FastAPI passes them by name
    request: Request,
    alerts: AlertStoreDep,
    scope: AlertScopeDep,
    after: Annotated[int, Query(ge=0, le=SQLITE_MAX_INT, description="send transitions after this id")] = 0,
    follow: Annotated[bool, Query(description="keep the stream open for new changes")] = True,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventStream:
    """Server-sent events: one event per alert change in the caller's scope (``event`` = the transition)."""
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else after
    return EventStream(_transitions(request, alerts, scope, start, follow), headers={"Cache-Control": "no-cache"})


@router.get("/alerts/{alert_id}", response_model=AlertDetailPublic)
def get_alert(found: ScopedAlert, store: StoreDep, settings: SettingsDep) -> AlertDetailPublic:
    a: dict[str, Any] = dict(found)
    sensors: list[tuple[str, str]] = []
    for r in a["body"].get("readings", []):
        pair = (str(r["device"]), str(r["sensor"]))
        if pair not in sensors:
            sensors.append(pair)
    if not sensors and a["device"] and a["sensor"]:
        sensors.append((a["device"], a["sensor"]))
    lo = int(a["episode_ms"]) - READINGS_MARGIN_MS
    hi = int(a["resolved_ms"] or a["fired_ms"]) + READINGS_MARGIN_MS
    readings = []
    for device, sensor in sensors[:8]:
        rows, _ = store.series(device, sensor, lo, hi, 1000)
        readings.append(
            AlertReadingsPublic(
                device=device,
                sensor=sensor,
                data=[
                    SeriesPointPublic(
                        time=from_ms(r.t_ms), value=r.value, qc_flag=r.qc_flag, edge_flag=r.edge_flag, qc_late=r.qc_late
                    )
                    for r in rows
                ],
            )
        )
    base = alert_public(a).model_dump()
    return AlertDetailPublic(
        **base,
        comments=[
            CommentPublic(author=c["author"], time=from_ms(int(c["t_ms"])), text=c["text"]) for c in a["comments"]
        ],
        readings=readings,
        deliveries=_deliveries(settings.notify_state_db, a["alert_id"]),
    )


def _deliveries(notify_db: Path, alert_id: str) -> list[NotificationPublic]:
    """The notifier's deliveries of the alert; none where no notifier has run (its database does not exist)."""
    if not notify_db.is_file():
        return []
    conn = sqlite3.connect(f"file:{notify_db}?mode=ro", uri=True, timeout=5.0)
    try:
        views = deliveries_for_alert(conn, alert_id)
    except sqlite3.OperationalError:  # a notifier that has not created its tables yet
        return []
    finally:
        conn.close()
    return [
        NotificationPublic(
            transition_id=v.transition_id,
            reason=v.reason,
            step=v.step,
            channel=v.channel,
            recipient=v.recipient,
            status=v.status,
            attempts=v.attempts,
            last_error=v.last_error,
            sent=None if v.sent_ms is None else from_ms(v.sent_ms),
            idempotency_key=v.idempotency_key,
        )
        for v in views
    ]


def _act(alerts: Any, alert_id: str, what: TransitionKind, who: str, text: str = "") -> AlertPublic:
    try:
        return alert_public(alerts.act(alert_id, what, who, int(time.time() * 1000), text))
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None


@router.post("/alerts/{alert_id}/ack", response_model=AlertPublic)
def ack(found: ScopedAlert, alerts: AlertStoreDep, scope: ActingScope) -> AlertPublic:
    return _act(alerts, str(found["alert_id"]), TransitionKind.ACKNOWLEDGED, scope.key.name)


@router.post("/alerts/{alert_id}/resolve", response_model=AlertPublic)
def resolve(
    found: ScopedAlert, alerts: AlertStoreDep, scope: ActingScope, body: AlertActionBody | None = None
) -> AlertPublic:
    return _act(alerts, str(found["alert_id"]), TransitionKind.RESOLVED, scope.key.name, body.comment if body else "")


@router.post("/alerts/{alert_id}/close", response_model=AlertPublic)
def close(found: ScopedAlert, alerts: AlertStoreDep, scope: ActingScope, body: AlertActionBody) -> AlertPublic:
    if not body.comment.strip():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="closing an alert needs a comment")
    return _act(alerts, str(found["alert_id"]), TransitionKind.CLOSED, scope.key.name, body.comment)


@router.post("/alerts/{alert_id}/assign", response_model=AlertPublic)
def assign(found: ScopedAlert, alerts: AlertStoreDep, scope: ActingScope, body: AlertAssignBody) -> AlertPublic:
    return _act(alerts, str(found["alert_id"]), TransitionKind.ASSIGNED, scope.key.name, body.assignee)


@router.post("/alerts/{alert_id}/comment", response_model=AlertPublic)
def comment(found: ScopedAlert, alerts: AlertStoreDep, scope: ActingScope, body: AlertCommentBody) -> AlertPublic:
    return _act(alerts, str(found["alert_id"]), TransitionKind.COMMENTED, scope.key.name, body.text)


# ------------------------------------------------------------------------------------------------ silences
def silence_public(s: Any) -> SilencePublic:
    return SilencePublic(
        id=s.id,
        city=s.city,
        site=s.site,
        device=s.device,
        kind=s.kind,
        start=from_ms(s.start_ms),
        end=from_ms(s.end_ms),
        reason=s.reason,
        created_by=s.created_by,
    )


def _silence_visible(key: Any, s: Any) -> bool:
    return bool(key.role is Role.ADMIN or key.can_read_site(s.city, s.site or "\x00"))


@router.get("/silences", response_model=list[SilencePublic])
def list_silences(alerts: AlertStoreDep, key: CurrentKey) -> list[SilencePublic]:
    return [silence_public(s) for s in alerts.silences() if _silence_visible(key, s)]


@router.post("/silences", response_model=SilencePublic, status_code=status.HTTP_201_CREATED)
def create_silence(
    body: SilenceCreate, alerts: AlertStoreDep, scope: ActingScope, manifest: ManifestDep
) -> SilencePublic:
    key = scope.key
    try:
        city = manifest.city(body.city)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown city {body.city!r}") from None
    sites = {s.id: s for s in city.sites}
    if body.site and body.site not in sites:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown site {body.site!r} in city {body.city!r}")
    if body.device:
        placement = manifest.device_index().get(body.device)
        if placement is None or placement.city.id != city.id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown device {body.device!r} in city {city.id!r}")
    site_for_scope = body.site or (manifest.device_index()[body.device].site.id if body.device else "")
    if not (
        key.role is Role.ADMIN
        or (
            key.can_read_site(city.id, site_for_scope) if site_for_scope else city.id in key.cities or "*" in key.cities
        )
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"key {key.name!r} has no access to city {city.id!r}")
    for name, when in (("start", body.start), ("end", body.end)):
        if when.tzinfo is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{name}: {when.isoformat()} has no UTC offset"
            )
    try:
        created = alerts.add_silence(
            city.id,
            to_ms(body.start.astimezone(dt.UTC)),
            to_ms(body.end.astimezone(dt.UTC)),
            body.reason,
            key.name,
            int(time.time() * 1000),
            site=body.site,
            device=body.device,
            kind=body.kind,
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    return silence_public(created)


@router.delete("/silences/{silence_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_silence(silence_id: SilenceId, alerts: AlertStoreDep, scope: ActingScope) -> None:
    found = alerts.silence(silence_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown silence {silence_id}")
    if not _silence_visible(scope.key, found):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"key {scope.key.name!r} has no access to silence {silence_id}"
        )
    alerts.delete_silence(silence_id)
