"""InfluxDB: a small client for the v1 HTTP API and InfluxQL quoting.

The schema (measurements, tags, field types, line protocol) is :mod:`pilotwatch.schema`.

Queries are InfluxQL on ``/query``, served alike by InfluxDB 1.x, 2.x (v1 compatibility API with a DBRP
mapping) and 3.x. Writes use ``/write`` (all three) or the v2 API via influxdb-client; the classified writers
(outcomes, retry, split) are :mod:`pilotwatch.influx_writer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from pilotwatch.schema import Measurement


class InfluxQueryError(RuntimeError):
    pass


class InfluxUnavailableError(InfluxQueryError):
    """InfluxDB answered 429 or 5xx, or could not be reached: a condition that passes, unlike a bad query."""


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means InfluxDB is away for now (a retry later may succeed), not that a request is wrong."""
    return isinstance(exc, InfluxUnavailableError | httpx.TransportError)


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxV1:
    """A thin synchronous client for the v1 HTTP API (``/ping``, ``/write``, ``/query``)."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 30.0,
        client: httpx.Client | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"InfluxDB url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.database = database
        headers = {"Authorization": f"Token {token}"} if token else {}
        auth = (username, password or "") if username else None
        # trust_env=False: InfluxDB is reached directly; a proxy from the environment must not reroute the data.
        self._client = client or httpx.Client(
            base_url=self.url, timeout=timeout_s, headers=headers, auth=auth, trust_env=False
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> InfluxV1:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> bool:
        try:
            return self._client.get("/ping").status_code == 204
        except httpx.HTTPError:
            return False

    def write_lines(self, lines: Iterable[str], precision: str = "ms") -> httpx.Response:
        """POST lines to ``/write``; returns the response so callers can classify errors themselves."""
        body = "\n".join(lines).encode()
        return self._client.post("/write", params={"db": self.database, "precision": precision}, content=body)

    def create_database(self) -> None:
        self.execute(f"CREATE DATABASE {quote_ident(self.database)}")

    def drop_database(self) -> None:
        self.execute(f"DROP DATABASE {quote_ident(self.database)}")

    def execute(self, q: str) -> dict[str, Any]:
        """Run a statement that changes state (CREATE, DROP, DELETE): InfluxDB 1.x wants those as POST."""
        response = self._client.post("/query", params={"q": q, "db": self.database})
        return self._result(response, q)

    @staticmethod
    def _result(response: httpx.Response, q: str) -> dict[str, Any]:
        if response.status_code == 429 or response.status_code >= 500:
            raise InfluxUnavailableError(f"InfluxDB answered {response.status_code} to {q!r}: {response.text[:300]}")
        if response.status_code >= 400:
            raise InfluxQueryError(f"InfluxDB answered {response.status_code} to {q!r}: {response.text[:300]}")
        body: dict[str, Any] = response.json()
        for result in body.get("results", []):
            if "error" in result:
                raise InfluxQueryError(f"InfluxQL error for {q!r}: {result['error']}")
        return body

    def query(self, q: str, epoch: str = "ms") -> list[dict[str, Any]]:
        """Run one InfluxQL statement; return its rows as dicts (tags of GROUP BY included)."""
        response = self._client.get("/query", params={"q": q, "db": self.database, "epoch": epoch})
        body = self._result(response, q)
        rows: list[dict[str, Any]] = []
        for result in body.get("results", []):
            for series in result.get("series", []):
                tags = series.get("tags", {})
                columns = series["columns"]
                for values in series.get("values", []):
                    row = dict(zip(columns, values, strict=True))
                    row.update(tags)
                    rows.append(row)
        return rows

    def count(self, measurement: str = Measurement.READING, field: str = "value", where: str = "") -> int:
        clause = f" WHERE {where}" if where else ""
        # Identifiers are quoted here; `where` is built by callers with quote_literal/quote_ident.
        rows = self.query(f"SELECT count({quote_ident(field)}) FROM {quote_ident(measurement)}{clause}")  # noqa: S608
        return int(rows[0]["count"]) if rows else 0
