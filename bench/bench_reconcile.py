"""The analytics reconciliation pass (:meth:`analytics.service.QCService.reconcile`): how long a pass takes over
``reconcile_lookback_s`` (7 days) of a fleet when there is nothing to back-fill (its cost every
``reconcile_interval_s``), and when one device's six series miss a day of ``qc`` points.

A local InfluxDB (free loopback port, temp folder) holds ``--sensors`` series (default 50, sampled every 300 s,
with one ``qc`` point per reading, as the live pass leaves them). Anchor, in the same run: one
``count("value")`` of ``reading`` over the same 7 days, grouped by series and hour (half of what an idle pass asks).

    .venv/bin/python bench/bench_reconcile.py [--sensors 50] [--days 7] [--repeat 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.service import HOUR_MS, QCService
from commands.stack import LocalStack
from pilotwatch.influx import InfluxV1
from pilotwatch.qc_config import GrossRange, ParameterQC, Qartod
from pilotwatch.schema import line
from pilotwatch.settings import StackConfig

STEP_MS = 300_000
LATE_S = 6 * 3600.0


def series_tags(i: int) -> dict[str, str]:
    device = i // 6
    return {"city": "bench", "site": f"s{device // 2}", "device": f"d{device}", "sensor": f"x{i % 6}", "param": "ph"}


def fill(influx: InfluxV1, sensors: int, start_ms: int, end_ms: int, *, qc_for: set[int]) -> int:
    lines: list[str] = []
    n = 0
    for i in range(sensors):
        tags = series_tags(i)
        for t in range(start_ms, end_ms, STEP_MS):
            value = 7.0 + 0.01 * ((t // STEP_MS + i) % 50)
            lines.append(line("reading", tags, {"value": value}, t))
            if i in qc_for:
                lines.append(line("qc", tags, {"flag": 1, "gross_range": 1, "label": "good"}, t))
            n += 1
            if len(lines) >= 20_000:
                assert influx.write_lines(lines).status_code == 204
                lines = []
    if lines:
        assert influx.write_lines(lines).status_code == 204
    return n


def timed(fn: object, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()  # type: ignore[operator]
        runs.append(time.perf_counter() - began)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=50)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="12 sensors, 2 days, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.sensors, args.days, args.repeat = 12, 2.0, 3
    now = int(time.time() * 1000) // HOUR_MS * HOUR_MS
    start = now - round(args.days * 86_400_000)
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        stack = LocalStack(StackConfig.with_free_ports(Path(tmp) / "stack"))
        stack.up()
        try:
            influx = InfluxV1(stack.config.influx_url, "bench_reconcile")
            influx.create_database()
            readings = fill(influx, args.sensors, start, now, qc_for=set(range(args.sensors)))
            cfg = ParameterQC(qartod=Qartod(gross_range=GrossRange(fail_span=(0.0, 14.0))))
            qc = QCService(influx, {"ph": cfg}, late_window=LATE_S)
            horizon = now - round(LATE_S * 1000)
            qc.load_state({
                "|".join(series_tags(i).values()): {
                    "horizon_ms": horizon, "seen_until_ms": now, "seen": [], "detectors": {},
                }
                for i in range(args.sensors)
            })  # fmt: skip
            lookback = now - round(args.days * 86_400_000)
            anchor_q = (
                f"SELECT count(value) FROM reading WHERE time >= {lookback}ms AND time < {horizon}ms "
                "GROUP BY time(1h), city, site, device, sensor, param fill(none)"
            )
            anchor = timed(lambda: influx.query(anchor_q), args.repeat)
            idle = timed(lambda: qc.reconcile(lookback, now, max_hours=24), args.repeat)
            report = qc.reconcile(lookback, now, max_hours=24)
            assert report.backfilled == 0, report
            # One device's six series lose a day of qc points: a day-late edge buffer to back-fill.
            gap = (now - 2 * 86_400_000, now - 86_400_000)
            influx.execute(f"DELETE FROM qc WHERE device = 'd0' AND time >= {gap[0]}ms AND time < {gap[1]}ms")
            qc.reconcile(lookback, now, max_hours=1)  # the first back-fill compiles the kernels: not measured
            influx.execute(f"DELETE FROM qc WHERE device = 'd0' AND time >= {gap[0]}ms AND time < {gap[1]}ms")
            began = time.perf_counter()
            report = qc.reconcile(lookback, now, max_hours=24)
            busy = time.perf_counter() - began
            influx.drop_database()
            influx.close()
        finally:
            stack.down()
    print(f"{args.sensors} series, {args.days:g} days, {readings:,} readings with their qc points")
    print("| measure | seconds |\n|---|---|")
    print(f"| reconcile pass, nothing to back-fill (median of {args.repeat}) | {idle:.3f} |")
    print(f"| anchor: one hourly count of reading over the same span | {anchor:.3f} |")
    print(f"| reconcile pass back-filling one device's day ({report.backfilled:,} qc points) | {busy:.3f} |")
    print(f"ratio idle / anchor: {idle / anchor:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
