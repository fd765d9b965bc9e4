"""The evidence pack: one folder (or zip) a city can hand to its funder.

Contract: :func:`write_pack` writes, into an empty folder, ``report.html`` (self-contained: figures are PNGs
rendered by matplotlib and inlined as data URIs, no script, no external file), ``summary.json`` (one record per
site x parameter x estimate: estimate, interval, method, n, coverage per period, and the provenance),
``data/*.parquet`` and ``data/*.csv`` (the readings with their QC flags and the data behind every figure; CSV files
open with ``#`` provenance lines, Parquet files carry the same text in their metadata), ``manifest.yaml`` (the
validated manifest used), ``METHODS.md``, and last ``SHA256SUMS`` covering every other file (``sha256sum -c``
format). Nothing in the pack depends on the machine that wrote it except the generation time it states.

Figures use matplotlib's object API (``Figure``, no pyplot state), so the API can build packs in worker threads.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import html
import io
import json
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from matplotlib import dates as mdates
from matplotlib.figure import Figure

from evaluation.evaluate import CityEvaluation, SensorData
from evaluation.series import EPOCH_DAY
from pilotwatch import __version__
from pilotwatch.manifest import Manifest, Parameter, SiteRole
from pilotwatch.schema import QartodFlag

HEADLINE = (
    "relative_change",
    "baci_relative",
    "baci_relative_mean",
    "daily_load_relative_change",
    "fill_rate_relative_change",
)
PERIOD_COLOURS = {"baseline": "#d9e6f2", "intervention": "#f7e3cf"}


@dataclass(frozen=True, slots=True)
class Provenance:
    source: str
    manifest_sha256: str
    generated: str

    def lines(self, ev: CityEvaluation) -> list[str]:
        return [
            f"pilotwatch {__version__}",
            f"city: {ev.city.id} ({ev.city.name}), time zone {ev.city.timezone}",
            f"source: {self.source}",
            f"manifest sha256: {self.manifest_sha256}",
            f"generated: {self.generated}",
            f"QC: readings with flag in {sorted(ev.acceptance.flags)} ({ev.acceptance.value}); QARTOD 1 good, "
            "2 not evaluated, 3 suspect, 4 fail, 9 missing",
            f"bootstrap: {ev.config.scheme.value}, {ev.config.replicates} replicates, seed {ev.config.seed}, "
            f"{ev.config.confidence:.0%} intervals",
            f"coverage threshold: {ev.min_coverage:.0%} of expected readings per period",
        ]


def manifest_digest(manifest: Manifest) -> str:
    """The digest of the validated manifest (the same text the API's export names)."""
    return hashlib.sha256(manifest.model_dump_json().encode()).hexdigest()


# ------------------------------------------------------------------------------------------------ data tables
def _day_dates(days: pd.Series) -> pd.Series:
    return pd.to_datetime(EPOCH_DAY) + pd.to_timedelta(days.astype("int64"), unit="D")


def readings_table(ev: CityEvaluation) -> pd.DataFrame:
    frames = []
    for data in ev.sensors:
        s = data.series
        if s.n == 0:
            continue
        period = np.where(
            (data.days >= _dn(data.site.periods.baseline.start)) & (data.days < _dn(data.site.periods.baseline.end)),
            "baseline",
            np.where(
                (data.days >= _dn(data.site.periods.intervention.start))
                & (data.days < _dn(data.site.periods.intervention.end)),
                "intervention",
                "outside",
            ),
        )
        frames.append(
            pd.DataFrame(
                {
                    "time": pd.to_datetime(s.times_ms, unit="ms", utc=True),
                    "city": ev.city.id,
                    "site": data.site.id,
                    "site_role": data.site.role.value,
                    "device": data.device.id,
                    "sensor": data.sensor.id,
                    "param": data.sensor.param.value,
                    "value": s.values,
                    "unit": data.sensor.unit,
                    "qc_flag": s.flags.astype(np.int64),
                    "qc_late": s.qc_late.astype(np.int64),
                    "used": s.accepted(ev.acceptance),
                    "period": period,
                    "local_hour": data.hours,
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _dn(day: dt.date) -> int:
    return (day - EPOCH_DAY).days


def hourly_table(readings: pd.DataFrame) -> pd.DataFrame:
    """Hourly means of the readings used, per sensor: the data of the series figures."""
    if readings.empty:
        return readings
    used = readings[readings["used"]]
    grouped = used.groupby(["site", "device", "sensor", "param", "period", pd.Grouper(key="time", freq="1h")])
    out = grouped["value"].agg(["mean", "count"]).reset_index()
    return out.rename(columns={"mean": "value", "count": "readings"})


def coverage_daily_table(ev: CityEvaluation) -> pd.DataFrame:
    rows = []
    for data in ev.sensors:
        ok = data.series.accepted(ev.acceptance)
        per_day = 86_400 / data.series.interval_s
        received_days, received = np.unique(data.days, return_counts=True)
        accepted_days, accepted = np.unique(data.days[ok], return_counts=True)
        acc = dict(zip(accepted_days.tolist(), accepted.tolist(), strict=True))
        for day, count in zip(received_days.tolist(), received.tolist(), strict=True):
            rows.append(
                {
                    "site": data.site.id,
                    "device": data.device.id,
                    "sensor": data.sensor.id,
                    "param": data.sensor.param.value,
                    "date": (EPOCH_DAY + dt.timedelta(days=int(day))).isoformat(),
                    "expected": int(per_day),
                    "received": int(count),
                    "accepted": int(acc.get(day, 0)),
                    "coverage": min(acc.get(day, 0) / per_day, 1.0),
                }
            )
    return pd.DataFrame(rows)


def _with_dates(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out.insert(out.columns.get_loc("day"), "date", _day_dates(out["day"]).dt.date.astype(str))
    return out.drop(columns=["day"])


# ------------------------------------------------------------------------------------------------ figures
def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _date_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator(maxticks=8)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def _shade_periods(ax: Any, ev: CityEvaluation, data: SensorData, lo: pd.Timestamp, hi: pd.Timestamp) -> None:
    tz = ev.city.timezone
    for name in ("baseline", "intervention"):
        period = getattr(data.site.periods, name)
        start = max(pd.Timestamp(period.start, tz=tz).tz_convert("UTC"), lo)
        end = min(pd.Timestamp(period.end, tz=tz).tz_convert("UTC"), hi)
        if start < end:
            ax.axvspan(start, end, color=PERIOD_COLOURS[name], zorder=0, label=name)


def figure_series(ev: CityEvaluation, manifest: Manifest, hourly: pd.DataFrame, param: Parameter) -> str | None:
    rows = hourly[hourly["param"] == param.value]
    if rows.empty:
        return None
    fig = Figure(figsize=(10, 3.2))
    ax = fig.subplots()
    lo, hi = rows["time"].min(), rows["time"].max()
    first = next(d for d in ev.sensors if d.sensor.param is param)
    _shade_periods(ax, ev, first, lo, hi)
    for (site, device), group in rows.groupby(["site", "device"]):
        ax.plot(group["time"], group["value"], linewidth=0.8, label=f"{site} ({device})")
    drawn: set[tuple[str, float]] = set()
    for data in ev.sensors:
        if data.sensor.param is not param:
            continue
        for name in data.site.limits:
            limit = manifest.limits[name].parameters.get(param)
            if limit is None:
                continue
            for which, value in (("min", limit.min), ("max", limit.max)):
                if value is not None and (name, value) not in drawn:
                    drawn.add((name, value))
                    ax.axhline(
                        value,
                        color="#b22222",
                        linestyle="--",
                        linewidth=1,
                        label=f"{name} {which} {value:g} ({limit.statistic.value})",
                    )
    _date_axis(ax)
    ax.set_title(f"{param.value} ({param.unit}): hourly means of QC-accepted readings")
    ax.set_ylabel(param.unit)
    ax.legend(fontsize=7, loc="upper left", ncols=3)
    return _png(fig)


def figure_distributions(hourly: pd.DataFrame, param: Parameter) -> str | None:
    rows = hourly[(hourly["param"] == param.value) & (hourly["period"] != "outside")]
    if rows.empty:
        return None
    labels, data, colours = [], [], []
    for (site, device, period), group in rows.groupby(["site", "device", "period"]):
        labels.append(f"{site}\n{device}\n{period}")
        data.append(group["value"].to_numpy())
        colours.append(PERIOD_COLOURS[str(period)])
    fig = Figure(figsize=(max(4.0, 1.3 * len(labels)), 3.2))
    ax = fig.subplots()
    boxes = ax.boxplot(data, tick_labels=labels, patch_artist=True, showfliers=False)
    for patch, colour in zip(boxes["boxes"], colours, strict=True):
        patch.set_facecolor(colour)
    ax.set_title(f"{param.value}: before / after (hourly means, whiskers 1.5 IQR)")
    ax.set_ylabel(param.unit)
    ax.tick_params(axis="x", labelsize=7)
    return _png(fig)


def figure_baci(baci_daily: pd.DataFrame) -> str | None:
    if baci_daily.empty:
        return None
    pairs = list(baci_daily.groupby(["site", "parameter", "control_site"]))
    fig = Figure(figsize=(10, 1.9 * len(pairs)))
    axes = fig.subplots(len(pairs), 1, squeeze=False)
    for ax, ((site, param, control), group) in zip(axes[:, 0], pairs, strict=True):
        dates = pd.to_datetime(group["date"])
        for period, colour in (("baseline", "#1f5f99"), ("intervention", "#c05a00")):
            sel = group["period"] == period
            ax.plot(
                dates[sel],
                group["difference"][sel],
                marker="o",
                markersize=2,
                linewidth=0.8,
                color=colour,
                label=period,
            )
            if sel.any():
                ax.hlines(
                    group["difference"][sel].mean(),
                    dates[sel].min(),
                    dates[sel].max(),
                    colors=colour,
                    linestyles="--",
                    linewidth=1,
                )
        _date_axis(ax)
        ax.set_title(f"{param}: {site} - {control} (daily mean of paired differences)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def figure_coverage(coverage_daily: pd.DataFrame) -> str | None:
    if coverage_daily.empty:
        return None
    table = coverage_daily.assign(series=coverage_daily["site"] + "/" + coverage_daily["sensor"]).pivot_table(
        index="series", columns="date", values="coverage", aggfunc="mean"
    )
    fig = Figure(figsize=(10, 0.28 * len(table) + 1.2))
    ax = fig.subplots()
    image = ax.imshow(
        table.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest"
    )
    ax.set_yticks(range(len(table)), table.index, fontsize=7)
    step = max(1, len(table.columns) // 12)
    ax.set_xticks(range(0, len(table.columns), step), table.columns[::step], fontsize=7, rotation=45, ha="right")
    ax.set_title("coverage calendar: QC-accepted readings / expected, per local day")
    fig.colorbar(image, ax=ax, fraction=0.02)
    return _png(fig)


# ------------------------------------------------------------------------------------------------ writing
def _csv(frame: pd.DataFrame, path: Path, provenance: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        for line in provenance:
            handle.write(f"# {line}\n")
        frame.to_csv(handle, index=False)


def _parquet(frame: pd.DataFrame, path: Path, provenance: list[str]) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"pilotwatch.provenance"] = "\n".join(provenance).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}g}"
    return html.escape(str(value))


def _table(rows: list[dict[str, Any]], columns: list[str], caption: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cls = ' class="low"' if row.get("low_coverage") else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns) + "</tr>")
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{''.join(body)}</table>"


def _html(ev: CityEvaluation, prov: Provenance, figures: list[tuple[str, str]]) -> str:
    headline = [r for r in ev.records if r["quantity"] in HEADLINE and r["site_role"] == SiteRole.INTERVENTION.value]
    figure_html = "".join(
        f'<figure><img alt="{html.escape(title)}" src="{uri}"><figcaption>{html.escape(title)}</figcaption></figure>'
        for title, uri in figures
    )
    cols = [
        "site",
        "device",
        "parameter",
        "design",
        "quantity",
        "estimate",
        "low",
        "high",
        "unit",
        "block_length_days",
        "n",
        "coverage_baseline",
        "coverage_intervention",
        "low_coverage",
        "note",
    ]
    compliance_cols = [
        "site",
        "sensor",
        "parameter",
        "limit_set",
        "statistic",
        "min",
        "max",
        "confirmed",
        "baseline_value",
        "baseline_compliant",
        "baseline_share_outside",
        "baseline_hours_outside",
        "intervention_value",
        "intervention_compliant",
        "intervention_share_outside",
        "intervention_hours_outside",
    ]
    coverage_cols = [
        "site",
        "sensor",
        "parameter",
        "period",
        "expected",
        "received",
        "accepted",
        "coverage",
        "gaps_over_1h",
        "longest_gap_h",
        "low_coverage",
    ]
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
        "caption{font-weight:bold;text-align:left;padding:4px 0}"
        "tr.low td{background:#fff3cd}figure{margin:1em 0}img{max-width:100%}"
        "figcaption{font-size:12px;color:#555}.prov{font-size:12px;color:#555;white-space:pre-wrap}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>pilotwatch evidence pack: {html.escape(ev.city.name)}</title><style>{style}</style></head><body>"
        f"<h1>Did the pilot work? {html.escape(ev.city.name)}</h1>"
        f"<p>{html.escape(ev.city.pilot)}</p>"
        f'<p class="prov">{html.escape(chr(10).join(prov.lines(ev)))}</p>'
        "<p>Rows shaded yellow have less than the coverage threshold in a period: read them as provisional. "
        "Intervals are 95 % block-bootstrap intervals over whole local days (see METHODS.md); an interval that "
        "contains 0 does not show a change.</p>"
        + _table(
            headline,
            cols,
            "Headline: relative changes (before/after, bin filling, effluent loads) and relative BACI effects "
            "(impact vs control; of medians, and of means, which suit intermittent discharges)",
        )
        + "<h2>Figures</h2>"
        + figure_html
        + "<h2>Compliance</h2>"
        + _table(ev.compliance, compliance_cols, "Limits by the statistic each standard names, per period")
        + "<h2>Coverage</h2>"
        + _table(ev.coverage, coverage_cols, "Expected, received and QC-accepted readings per period")
        + "<h2>All estimates</h2>"
        + _table(ev.records, cols, "Every estimate in summary.json")
        + "<p>Data behind every figure: data/*.csv and data/*.parquet. Methods and references: METHODS.md.</p>"
        "</body></html>"
    )


def write_pack(ev: CityEvaluation, manifest: Manifest, out: Path, source: str) -> list[Path]:
    """Write the pack into ``out`` (created; must be empty). Returns the files written, SHA256SUMS last."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise ValueError(f"--out {out} is not empty; the pack needs a folder of its own")
    prov = Provenance(
        source,
        manifest_digest(manifest),
        dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    )
    lines = prov.lines(ev)
    data_dir = out / "data"
    data_dir.mkdir()
    readings = readings_table(ev)
    hourly = hourly_table(readings)
    coverage_daily = coverage_daily_table(ev)
    baci_daily = _with_dates(ev.baci_days)
    tables = {
        "readings": readings,
        "hourly": hourly,
        "coverage_daily": coverage_daily,
        "coverage_periods": pd.DataFrame(ev.coverage),
        "baci_daily": baci_daily,
        "compliance": pd.DataFrame(ev.compliance),
        "bins_daily": _with_dates(ev.bin_days),
        "effluent_loads_daily": _with_dates(ev.load_days),
    }
    for name, frame in tables.items():
        if frame.empty:
            continue
        _csv(frame, data_dir / f"{name}.csv", lines)
        _parquet(frame, data_dir / f"{name}.parquet", lines)

    params = sorted({d.sensor.param for d in ev.sensors}, key=lambda p: p.value)
    figures: list[tuple[str, str]] = []
    for param in params:
        uri = figure_series(ev, manifest, hourly, param) if not hourly.empty else None
        if uri:
            figures.append(
                (f"{param.value}: series over both periods, periods shaded, limits dashed (data/hourly)", uri)
            )
        uri = figure_distributions(hourly, param) if not hourly.empty else None
        if uri:
            figures.append((f"{param.value}: before/after distributions (data/hourly)", uri))
    uri = figure_baci(baci_daily)
    if uri:
        figures.append(("BACI: impact - control, daily means of paired readings (data/baci_daily)", uri))
    uri = figure_coverage(coverage_daily)
    if uri:
        figures.append(("coverage calendar (data/coverage_daily)", uri))

    (out / "report.html").write_text(_html(ev, prov, figures), encoding="utf-8")
    summary = {
        "pilotwatch": __version__,
        "city": ev.city.id,
        "provenance": lines,
        "qc_flags_used": sorted(ev.acceptance.flags),
        "qc_flag_names": {int(f): f.name.lower() for f in QartodFlag},
        "qc_configuration": {d.key: d.sensor.qc.model_dump(mode="json", exclude_none=True) for d in ev.sensors},
        "coverage_threshold": ev.min_coverage,
        "estimates": ev.records,
        "compliance": ev.compliance,
        "coverage": ev.coverage,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False), encoding="utf-8")
    (out / "manifest.yaml").write_text(
        f"# the validated pilot manifest used, sha256 of its JSON form: {prov.manifest_sha256}\n"
        + yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    (out / "METHODS.md").write_text(
        resources.files("evaluation").joinpath("METHODS.md").read_text("utf-8"), encoding="utf-8"
    )
    files = sorted(p for p in out.rglob("*") if p.is_file())
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out).as_posix()}\n" for p in files)
    (out / "SHA256SUMS").write_text(sums, encoding="utf-8")
    return [*files, out / "SHA256SUMS"]


def zip_stream(folder: Path, prefix: str, chunk: int = 1 << 16) -> Iterator[bytes]:
    """The pack folder as a zip, yielded in chunks (built in a temporary spool, not in one string)."""
    import tempfile  # noqa: PLC0415

    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                archive.write(path, f"{prefix}/{path.relative_to(folder).as_posix()}")
        spool.seek(0)
        while block := spool.read(chunk):
            yield block


def write_report_from_args(args: argparse.Namespace) -> int:
    """``pilotwatch evaluate report``: settings from the flags, the environment or the local stack of ``--home``."""
    from rich.console import Console  # noqa: PLC0415

    from evaluation.settings import evaluation_settings, run_report  # noqa: PLC0415

    console = Console(stderr=True)
    settings = evaluation_settings(args)
    with console.status(f"evaluating {args.city} from InfluxDB {settings.influx.url} db {settings.influx.database}"):
        files, ev = run_report(settings, args.city, Path(args.out))
    estimates = len(ev.records)
    low = sum(1 for r in ev.records if r["low_coverage"])
    console.print(
        f"evidence pack of {ev.city.name}: {len(files)} files in {args.out} ({estimates} estimates, "
        f"{low} on low coverage); check it with: cd {args.out} && sha256sum -c SHA256SUMS"
    )
    return 0
