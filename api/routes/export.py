"""``GET /export.csv``: evaluators' export of one site, streamed.

Each row carries the sample time (UTC), the site's role, the period of the sample (``baseline``,
``intervention`` or ``outside``, judged on the local date in the city's time zone, as the manifest's dates are
local), the QC flag (2 = not evaluated where analytics has not flagged it) and the edge's own flag. Comment
lines (``#``) before the header say where the numbers come from; a closing comment gives the row count, or
says that the export stopped early and why, so a truncated file is never mistaken for a complete one.

Bounded effort: the range is cut to the years a reading can be stored in and empty stretches are jumped over
(:meth:`api.store.ReadingStore.export_rows`), so the work follows the data, not the range asked for; at most
``export_max_concurrent`` exports run at once (one more gets 429 with ``Retry-After``); an export stops when the
client disconnects (rows are written at least every ``FLUSH_EVERY_S``, which is how a gone client shows, and the
reading thread stops at its next row) and after ``export_timeout_s``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import threading
import time
import zoneinfo
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Annotated

import anyio
import httpx
from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.deps import (
    ExportSite,
    ManifestDep,
    SettingsDep,
    StoreDep,
    check_range,
    from_ms,
    parse_time,
    stored_window,
    to_ms,
)
from api.errors import INFLUX_FAILED, READS, error_responses, log
from api.store import ExportRow
from pilotwatch import __version__
from pilotwatch.influx import InfluxQueryError
from pilotwatch.manifest import Manifest, Parameter, Periods

router = APIRouter(tags=["export"])

COLUMNS = (
    "time",
    "city",
    "site",
    "site_role",
    "device",
    "sensor",
    "param",
    "value",
    "unit",
    "qc_flag",
    "qc_late",
    "edge_flag",
    "period",
)
ROWS_PER_WRITE = 500
FLUSH_EVERY_S = 0.25
RETRY_AFTER_S = 30


class ExportSlots:
    """How many exports are streaming; only touched on the event loop, so a plain counter is enough."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def take(self) -> None:
        if self.active >= self.limit:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail=f"{self.active} exports are running, the most this server runs at once; retry in "
                f"{RETRY_AFTER_S} s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.active += 1

    def give_back(self) -> None:
        self.active -= 1


class SlotStreamingResponse(StreamingResponse):
    """Gives the export's slot back however the response ends: completed, failed or abandoned by the client."""

    def __init__(self, content: AsyncIterator[str], slots: ExportSlots, **kwargs: object) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self._slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back()


def export_slots(request: Request) -> ExportSlots:
    state = request.app.state
    if getattr(state, "export_slots", None) is None:
        state.export_slots = ExportSlots(state.settings.export_max_concurrent)
    slots: ExportSlots = state.export_slots
    return slots


def manifest_digest(manifest: Manifest) -> str:
    return hashlib.sha256(manifest.model_dump_json().encode()).hexdigest()


def _local_midnight_utc(day: dt.date, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)


class PeriodBounds:
    """The period of a sample time in ms: ``baseline``, ``intervention`` or ``outside``, judged on the local date
    (the manifest's dates are local, end exclusive). Each period's dates become the UTC instants of their local
    midnights once per export, so a row costs two integer comparisons, not a time-zone conversion."""

    def __init__(self, periods: Periods, tz: zoneinfo.ZoneInfo) -> None:
        def ms(day: dt.date) -> int:
            return to_ms(_local_midnight_utc(day, tz))

        self.spans = (
            ("baseline", ms(periods.baseline.start), ms(periods.baseline.end)),
            ("intervention", ms(periods.intervention.start), ms(periods.intervention.end)),
        )

    def period(self, t_ms: int) -> str:
        for name, start, end in self.spans:
            if start <= t_ms < end:
                return name
        return "outside"


@router.get(
    "/export.csv",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "the export, streamed"},
        **error_responses(*READS, 429),
    },
)
async def export_csv(
    *,
    request: Request,
    settings: SettingsDep,
    manifest: ManifestDep,
    store: StoreDep,
    scoped: ExportSite,
    param: Annotated[str | None, Query(description="parameter, e.g. cod; default: every parameter")] = None,
    start: Annotated[str | None, Query(description="ISO 8601 with offset; default: baseline start")] = None,
    end: Annotated[str | None, Query(description="ISO 8601 with offset, exclusive; default: intervention end")] = None,
) -> StreamingResponse:
    city, site = scoped.city, scoped.site
    measured = sorted({s.param.value for d in site.devices for s in d.sensors})
    if param is not None:
        if param not in {p.value for p in Parameter}:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"query parameter 'param': {param!r} is not a parameter; expected one of "
                + ", ".join(p.value for p in Parameter),
            )
        if param not in measured:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"query parameter 'param': {param!r} is not measured at site {site.id!r}; measured: "
                + ", ".join(measured),
            )
    tz = zoneinfo.ZoneInfo(city.timezone)
    start_t = parse_time("start", start) if start else _local_midnight_utc(site.periods.baseline.start, tz)
    end_t = parse_time("end", end) if end else _local_midnight_utc(site.periods.intervention.end, tz)
    check_range(start_t, end_t)
    generated = dt.datetime.now(dt.UTC).replace(microsecond=0)
    window = stored_window(start_t, end_t)
    rows = (
        store.export_rows(
            site.id,
            param,
            *window,
            chunk_ms=settings.export_chunk_s * 1000,
            page_rows=settings.export_page_rows,
        )
        if window is not None
        else iter(())
    )
    header = [
        "# pilotwatch export (CSV; lines starting with # are provenance, not data)",
        f"# pilotwatch: {__version__}",
        f"# programme: {manifest.programme.name}",
        f"# manifest: version {manifest.version}, sha256 {manifest_digest(manifest)}",
        f"# generated: {generated.isoformat().replace('+00:00', 'Z')}",
        f"# query: site={site.id} param={param or '*'} start={_iso(start_t)} end={_iso(end_t)} (end exclusive)",
        f"# source: InfluxQL on measurements 'reading' and 'qc', read in chunks of {settings.export_chunk_s} s",
        f"# site: {site.id} ({site.name}), city {city.id}, kind {site.kind.value}, role {site.role.value}",
        f"# periods (local dates, {city.timezone}, end exclusive): baseline {site.periods.baseline.start} to "
        f"{site.periods.baseline.end}, intervention {site.periods.intervention.start} to "
        f"{site.periods.intervention.end}",
        "# qc_flag: QARTOD 1 good, 2 not evaluated, 3 suspect, 4 fail, 9 missing; qc_late: 1 when the reading arrived"
        " after analytics' late window and was QC'd by its reconciliation; edge_flag: flag sent by the device",
    ]
    filename = f"pilotwatch-{site.id}-{param or 'all'}-{start_t:%Y%m%dT%H%MZ}-{end_t:%Y%m%dT%H%MZ}.csv"
    deadline = time.monotonic() + settings.export_timeout_s
    stop = threading.Event()
    pieces = _stream(
        header,
        rows,
        site.role.value,
        PeriodBounds(site.periods, tz),
        deadline=deadline,
        timeout_s=settings.export_timeout_s,
        stop=stop,
    )
    slots = export_slots(request)
    slots.take()  # last, so nothing between taking the slot and the response that gives it back can fail
    return SlotStreamingResponse(
        _until_disconnected(request, pieces, stop),
        slots,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _until_disconnected(request: Request, pieces: Generator[str], stop: threading.Event) -> AsyncIterator[str]:
    """The pieces, each made on a worker thread (they query InfluxDB), until the client goes away.

    Uvicorn (ASGI 2.3) reports a disconnect by cancelling this generator while it waits for the thread; servers
    on ASGI 2.4 are caught by the check between pieces. Either way ``stop`` is set, and the thread's generator
    ends at its next row, so at most the InfluxDB page in flight is read after the client left.
    """
    try:
        while True:
            if await request.is_disconnected():
                return
            piece = await anyio.to_thread.run_sync(next, pieces, None)
            if piece is None:
                return
            yield piece
    finally:
        stop.set()
        # ValueError: cancelled while the worker thread runs the generator; it sees ``stop`` and ends by itself.
        with contextlib.suppress(ValueError):
            pieces.close()


def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stream(
    header: list[str],
    rows: Iterator[ExportRow],
    role: str,
    periods: PeriodBounds,
    *,
    deadline: float,
    timeout_s: float,
    stop: threading.Event,
) -> Generator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    yield "\n".join(header) + "\n"
    writer.writerow(COLUMNS)
    count = 0
    next_flush = time.monotonic() + FLUSH_EVERY_S
    try:
        for row in rows:
            if stop.is_set():
                return  # the client has gone: read nothing more
            writer.writerow(
                (
                    _iso(from_ms(row.t_ms)),
                    row.city,
                    row.site,
                    role,
                    row.device,
                    row.sensor,
                    row.param,
                    repr(row.value),
                    row.unit,
                    row.qc_flag,
                    int(row.qc_late),
                    "" if row.edge_flag is None else row.edge_flag,
                    periods.period(row.t_ms),
                )
            )
            count += 1
            now = time.monotonic()
            if count % ROWS_PER_WRITE == 0 or now >= next_flush:
                # Also on a timer: a slow or sparse export still writes regularly, and writing is how the server
                # learns that a client has gone (uvicorn reads nothing more from the socket once the request
                # is in, so a closed connection shows only when a write fails).
                next_flush = now + FLUSH_EVERY_S
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
                if time.monotonic() > deadline:
                    yield (
                        f"# export stopped early after {count} rows: the server's limit of {timeout_s:g} s per export "
                        "was reached; ask for a shorter range\n"
                    )
                    return
    except (InfluxQueryError, httpx.HTTPError) as exc:
        # The status line went out with the first chunk; the only honest signal left is in the file itself. The
        # cause goes to the log: InfluxDB's message would echo the query.
        log.error("export stopped after %d rows: %s", count, exc)
        yield buffer.getvalue() + f"# export stopped early after {count} rows: {INFLUX_FAILED}\n"
        return
    yield buffer.getvalue() + f"# end of export: {count} rows\n"
