"""The classified InfluxDB writer: ``write(lines) -> WriteResult`` behind one narrow interface, and the one
policy for retrying, splitting and giving up, shared by every service that writes points (ingest, analytics, ...).

Two implementations of :class:`Writer`:

- :class:`V1Writer` posts line protocol to ``/write?db=...&precision=ms`` (InfluxDB 1.x; also served by 2.x's v1
  compatibility API and by InfluxDB 3).
- :class:`V2Writer` writes through ``influxdb-client``'s synchronous v2 write API with token, org and bucket, as a
  city deployment on InfluxDB 2.x/3.x runs it.

Every outcome is sorted into one of four kinds (the telegraf model): ``OK``; ``RETRY`` (429, 5xx, timeouts,
refused connections; ``retry_after_s`` carries the server's Retry-After when it sent one); ``REJECT`` (400/413/422:
the batch holds lines the server will never take); ``FATAL`` (401/403/404 or a misconfiguration: retrying cannot
help, a person must act). Writers never retry on their own. :func:`write_split` finds the refused lines of a
rejected batch by halving it (the good ones land, the refused ones go to a callback), and :func:`write_with_retry`
adds backoff with Retry-After until a deadline; both raise :class:`FatalWriteError` on a fatal answer. A caller
(ingest's store stage, analytics' writer) chooses what happens after the deadline (spool, or fail the run).
"""

from __future__ import annotations

import email.utils
import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from pilotwatch.influx import InfluxUnavailableError, InfluxV1


class Outcome(enum.StrEnum):
    OK = "ok"
    RETRY = "retry"
    REJECT = "reject"
    FATAL = "fatal"


@dataclass(frozen=True, slots=True)
class WriteResult:
    outcome: Outcome
    status: int | None = None
    detail: str = ""
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


OK = WriteResult(Outcome.OK, 204)


class Writer(Protocol):
    """What the service needs from a database: write a batch of line-protocol lines, say how it went."""

    name: str

    def write(self, lines: Sequence[str]) -> WriteResult: ...

    def close(self) -> None: ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_status(status: int, body: str, retry_after: str | None) -> WriteResult:
    """Map an HTTP answer of a write endpoint to an outcome. Shared by both writers so they cannot disagree."""
    detail = body.strip()[:500]
    if 200 <= status < 300:
        return OK
    if status in (401, 403):
        return WriteResult(Outcome.FATAL, status, f"InfluxDB refused the credentials ({status}): {detail}")
    if status == 404:
        # Unknown database or bucket: nothing a retry can fix, and writing elsewhere would hide the data.
        return WriteResult(Outcome.FATAL, status, f"InfluxDB has no such database/bucket (404): {detail}")
    if status in (400, 413, 422):
        return WriteResult(Outcome.REJECT, status, detail)
    if status == 429 or status >= 500:
        return WriteResult(Outcome.RETRY, status, detail, parse_retry_after(retry_after))
    return WriteResult(Outcome.FATAL, status, f"unexpected answer {status} from InfluxDB: {detail}")


class WriteRefusedError(RuntimeError):
    """InfluxDB refused written lines for a reason a retry cannot fix (bad lines, credentials, no database)."""


def raise_for_write(response: httpx.Response, what: str) -> None:
    """Return when a ``/write`` answer says the lines landed; raise :class:`InfluxUnavailableError` when a retry later
    may succeed (429, 5xx) and :class:`WriteRefusedError` otherwise. ``what`` names the lines in the message."""
    result = classify_status(response.status_code, response.text, response.headers.get("Retry-After"))
    if result.outcome is Outcome.OK:
        return
    message = f"InfluxDB did not store the {what} ({result.status}): {result.detail[:300]}"
    if result.outcome is Outcome.RETRY:
        raise InfluxUnavailableError(message)
    raise WriteRefusedError(message)


class V1Writer:
    """``POST /write`` of InfluxDB 1.x (and the v1 compatibility API of 2.x/3.x)."""

    name = "v1"

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        if not database:
            raise ValueError("database must be a non-empty name, e.g. 'pilotwatch'")
        # The domain's one v1 HTTP client (pilotwatch.influx.InfluxV1) sends the request; this class classifies.
        self.influx = InfluxV1(
            url, database, username=username, password=password, token=token, timeout_s=timeout_s, client=client
        )
        self.url = self.influx.url
        self.database = database

    def write(self, lines: Sequence[str]) -> WriteResult:
        try:
            response = self.influx.write_lines(lines)
        except httpx.TimeoutException as exc:
            return WriteResult(Outcome.RETRY, None, f"timeout: {exc}")
        except httpx.TransportError as exc:
            return WriteResult(Outcome.RETRY, None, f"cannot reach InfluxDB at {self.url}: {exc}")
        return classify_status(response.status_code, response.text, response.headers.get("Retry-After"))

    def close(self) -> None:
        self.influx.close()


class V2Writer:
    """influxdb-client's synchronous v2 write API (``/api/v2/write`` with token, org and bucket)."""

    name = "v2"

    def __init__(self, url: str, token: str, org: str, bucket: str, *, timeout_s: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"InfluxDB url must start with http:// or https://, got {url!r}")
        for label, value in (("token", token), ("org", org), ("bucket", bucket)):
            if not value:
                raise ValueError(f"the v2 write API needs a non-empty {label}")
        # Imported here so the v1 path does not pay for the client's import time.
        from influxdb_client.client.influxdb_client import InfluxDBClient  # noqa: PLC0415
        from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: PLC0415

        self.url = url.rstrip("/")
        self.bucket = bucket
        self.org = org
        # retries=False: the service owns retry and backoff; a hidden retry loop here would stall the pipeline.
        self._client: Any = InfluxDBClient(
            url=self.url, token=token, org=org, timeout=int(timeout_s * 1000), retries=False
        )
        self._api: Any = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: Sequence[str]) -> WriteResult:
        import urllib3  # noqa: PLC0415
        from influxdb_client.domain.write_precision import WritePrecision  # noqa: PLC0415
        from influxdb_client.rest import ApiException  # noqa: PLC0415

        try:
            self._api.write(
                bucket=self.bucket, org=self.org, record="\n".join(lines), write_precision=WritePrecision.MS
            )
        except ApiException as exc:
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or exc.reason)
            headers: Any = exc.headers or {}
            return classify_status(int(exc.status or 0), body, headers.get("Retry-After"))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return WriteResult(Outcome.RETRY, None, f"cannot reach InfluxDB at {self.url}: {exc}")
        return OK

    def close(self) -> None:
        self._api.close()
        self._client.close()


class FatalWriteError(RuntimeError):
    """InfluxDB refused in a way no retry can fix (401/403/404); the writing service stops and says why."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff for :func:`write_with_retry`: ``initial_s`` doubling up to ``max_s``, for at most ``give_up_after_s``."""

    initial_s: float = 0.2
    max_s: float = 10.0
    give_up_after_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got initial_s={self.initial_s} max_s={self.max_s}")
        if self.give_up_after_s < 0:
            raise ValueError(f"give_up_after_s must be >= 0, got {self.give_up_after_s}")


RejectedLine = Callable[[str, WriteResult], None]


def write_split(writer: Writer, lines: Sequence[str], on_rejected: RejectedLine) -> WriteResult:
    """Write; on a REJECT halve the batch until the refused lines are found, hand each to ``on_rejected``, and
    land the rest. Returns OK once every line landed or was handed over, else the first RETRY result."""
    result = writer.write(lines)
    if result.outcome is Outcome.FATAL:
        raise FatalWriteError(f"{writer.name} writer: {result.detail}")
    if result.outcome is not Outcome.REJECT:
        return result
    if len(lines) == 1:
        on_rejected(lines[0], result)
        return WriteResult(Outcome.OK, result.status)
    middle = len(lines) // 2
    first = write_split(writer, lines[:middle], on_rejected)
    if first.outcome is not Outcome.OK:
        return first
    return write_split(writer, lines[middle:], on_rejected)


def write_with_retry(
    writer: Writer,
    lines: Sequence[str],
    policy: RetryPolicy,
    on_rejected: RejectedLine,
    *,
    stop: Callable[[], bool] = lambda: False,
    on_retry: Callable[[WriteResult], None] = lambda _result: None,
    sleep: Callable[[float], None] = time.sleep,
) -> WriteResult:
    """:func:`write_split` with backoff (the server's Retry-After when it sent one) until ``give_up_after_s`` has
    passed or ``stop()`` says so. Returns OK, or the last RETRY result when it gave up; raises FatalWriteError."""
    deadline = time.monotonic() + policy.give_up_after_s
    delay = policy.initial_s
    while True:
        result = write_split(writer, lines, on_rejected)
        if result.outcome is Outcome.OK:
            return result
        on_retry(result)
        if time.monotonic() >= deadline or stop():
            return result
        wait = result.retry_after_s if result.retry_after_s is not None else delay
        sleep(min(wait, policy.max_s, max(0.0, deadline - time.monotonic()) + 0.01))
        delay = min(delay * 2, policy.max_s)
