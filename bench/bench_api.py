"""The API under load, beside InfluxDB's own speed for the same work, measured in the same run.

1. Series: ``--clients`` concurrent clients (default 50) each asking ``GET /series`` for a 30-day hourly series
   of one sensor (720 points with their QC flags). Printed: p50/p99 latency and requests/s; beside them the
   floor, InfluxDB answering the same two InfluxQL statements the API sends, at the same concurrency.
2. Export: ``GET /export.csv`` of one site over the whole stored range, rows/s; beside it InfluxDB's own
   query-to-CSV rate (one ``/query`` with ``Accept: application/csv`` for the same rows), and the API's RSS
   sampled during the export (first, peak, last), which must stay flat.

The API runs in its own process (``pilotwatch api serve``'s uvicorn, one worker), so its RSS is its own.

    .venv/bin/python bench/bench_api.py [--clients 50] [--requests 1000] [--export-days 30] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.keys import ApiKeyCreate, KeyStore
from api.store import eq, fields, time_range
from commands.stack import LocalStack
from pilotwatch.influx import InfluxV1, quote_ident
from pilotwatch.manifest import Role, load_manifest
from pilotwatch.schema import Measurement, StoredReading, line
from pilotwatch.settings import StackConfig, free_port

CITY, SITE, DEVICE = "bangkok", "bkk-pratunam-pier", "bkk-pratunam-wq1"
T0_MS = 1_780_000_000_000 // 3_600_000 * 3_600_000  # an hour in 2026
HOUR_MS = 3_600_000
Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


def seed(influx: InfluxV1, days: int, export_step_s: int) -> int:
    """30 days of hourly pH (the series), and ``days`` of conductivity every ``export_step_s`` (the export)."""
    lines = []
    for i in range(30 * 24):
        t = T0_MS + i * HOUR_MS
        lines.append(StoredReading(CITY, SITE, DEVICE, "ph", "ph", 7 + (i % 10) / 10, "pH", t, seq=i).to_line())
        tags = {"city": CITY, "site": SITE, "device": DEVICE, "sensor": "ph", "param": "ph"}
        lines.append(line(Measurement.QC, tags, {"flag": 1}, t))
    influx.write_lines(lines).raise_for_status()
    rows = days * 86_400 // export_step_s
    for start in range(0, rows, 20_000):
        batch = [
            StoredReading(
                CITY, SITE, DEVICE, "ec", "conductivity", 500 + k % 50, "uS/cm", T0_MS + k * export_step_s * 1000, seq=k
            ).to_line()
            for k in range(start, min(rows, start + 20_000))
        ]
        influx.write_lines(batch).raise_for_status()
    return rows


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(url: str, clients: int, requests: int, make: Call) -> tuple[list[float], float]:
    """``requests`` GETs from ``clients`` concurrent connections; latencies (s) and the wall time."""
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                response = await make(client)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, time.perf_counter() - started


def rss_mb(pid: int) -> float:
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return int(text.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--export-days", type=int, default=30)
    parser.add_argument("--export-step-s", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="200 requests, a 7-day export")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.export_days = 200, 7
    manifest = load_manifest()
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        stack = LocalStack(StackConfig.with_free_ports(tmp / "stack"))
        stack.up()
        server = None
        try:
            influx = InfluxV1(stack.config.influx_url, stack.config.database)
            export_rows = seed(influx, args.export_days, args.export_step_s)
            _, key = KeyStore(tmp / "keys.yaml").add(
                ApiKeyCreate(name="bench", role=Role.EVALUATOR, cities=(CITY,)), manifest
            )
            port = free_port()
            env = {
                **os.environ,
                "PILOTWATCH_API_INFLUX__URL": stack.config.influx_url,
                "PILOTWATCH_API_INFLUX__DATABASE": stack.config.database,
                "PILOTWATCH_API_KEYS_FILE": str(tmp / "keys.yaml"),
                "PILOTWATCH_API_PORT": str(port),
            }
            server = subprocess.Popen(
                [sys.executable, "-m", "commands.cli", "api", "serve"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            api_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{api_url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the API did not start")
                time.sleep(0.2)

            start_ms, end_ms = T0_MS, T0_MS + 30 * 24 * HOUR_MS
            params = {"device": DEVICE, "sensor": "ph", "start": iso(start_ms), "end": iso(end_ms), "limit": "1000"}
            headers = {"X-API-Key": key}
            check = httpx.get(f"{api_url}/series", params=params, headers=headers, timeout=60).json()
            assert check["count"] == 720, check

            async def api_call(client: httpx.AsyncClient) -> httpx.Response:
                return await client.get("/series", params=params, headers=headers)

            where = f"{eq('device', DEVICE)} AND {eq('sensor', 'ph')} AND {time_range(start_ms, end_ms)}"
            reading_q = (
                f"SELECT {fields('value', 'flag')} FROM {quote_ident(Measurement.READING)} "
                f"WHERE {where} ORDER BY time ASC LIMIT 1001"
            )
            qc_q = f"SELECT {fields('flag')} FROM {quote_ident(Measurement.QC)} WHERE {where}"
            db = stack.config.database

            async def floor_call(client: httpx.AsyncClient) -> httpx.Response:
                # The same two statements the API sends, one after the other, as the API does.
                first = await client.get("/query", params={"db": db, "q": reading_q, "epoch": "ms"})
                first.raise_for_status()
                return await client.get("/query", params={"db": db, "q": qc_q, "epoch": "ms"})

            floor_lat, floor_wall = asyncio.run(load(stack.config.influx_url, args.clients, args.requests, floor_call))
            api_lat, api_wall = asyncio.run(load(api_url, args.clients, args.requests, api_call))
            print(f"series: {args.clients} clients, {args.requests} requests of 720 hourly points (30 days)")
            print(f"  {'':10} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9}")
            for name, lat, wall in (("API", api_lat, api_wall), ("InfluxDB", floor_lat, floor_wall)):
                print(
                    f"  {name:10} {statistics.median(lat) * 1000:9.1f} {percentile(lat, 0.99) * 1000:9.1f} "
                    f"{len(lat) / wall:9.1f}"
                )
            print(
                f"  p99 ratio API / InfluxDB: {percentile(api_lat, 0.99) / percentile(floor_lat, 0.99):.2f} (goal ≤ 2)"
            )

            # -- export ------------------------------------------------------------------------------------
            samples: list[float] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append(rss_mb(server.pid))
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            export_params = {
                "site": SITE,
                "param": "conductivity",
                "start": iso(T0_MS),
                "end": iso(T0_MS + args.export_days * 86_400_000),
            }
            started = time.perf_counter()
            rows = 0
            with httpx.stream(
                "GET", f"{api_url}/export.csv", params=export_params, headers=headers, timeout=600
            ) as response:
                for text_line in response.iter_lines():
                    if text_line and not text_line.startswith(("#", "time,")):
                        rows += 1
            api_export_s = time.perf_counter() - started
            stop.set()
            sampler.join()
            assert rows == export_rows, (rows, export_rows)
            csv_q = (
                f"SELECT {fields('value', 'unit', 'flag', 'city', 'device', 'sensor', 'param')} "
                f"FROM {quote_ident(Measurement.READING)} WHERE {eq('site', SITE)} AND {eq('param', 'conductivity')}"
            )
            started = time.perf_counter()
            with httpx.stream(
                "GET",
                f"{stack.config.influx_url}/query",
                params={"db": db, "q": csv_q, "chunked": "true", "chunk_size": "10000"},
                headers={"Accept": "application/csv"},
                timeout=600,
            ) as response:
                influx_rows = sum(
                    1 for text_line in response.iter_lines() if text_line and not text_line.startswith("name,")
                )
            influx_s = time.perf_counter() - started
            print(f"export: {rows:,} rows of one site")
            print(f"  API       {rows / api_export_s:>10,.0f} rows/s ({api_export_s:.1f} s)")
            print(f"  InfluxDB  {influx_rows / influx_s:>10,.0f} rows/s ({influx_s:.1f} s, /query as CSV)")
            print(
                f"  API RSS during the export: first {samples[0]:.0f} MB, peak {max(samples):.0f} MB, "
                f"last {samples[-1]:.0f} MB ({len(samples)} samples)"
            )
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=15)
            stack.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
