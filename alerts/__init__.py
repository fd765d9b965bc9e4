"""alerts — the alert engine: decides and stores alerts; notifications are the ``notify`` package's job.

In: readings joined with the analytics core's ``qc`` verdict (flag, per-test flags, anomaly score, label
good/fault/event) and ``device_status`` points, read from InfluxDB; rules derived from the pilot manifest
(limits with the statistic their standard names, pollution events, device health, bin overflow). Out: alerts in
one SQLite database (WAL) with their lifecycle, the ``alert_transitions`` outbox of :mod:`pilotwatch.alerting`
(appended in the same transaction), and ``alert`` points in InfluxDB for Grafana.

Guarantees: QC-gated (a reading flagged FAIL or labelled fault never raises a limit or pollution alert); one
alert per (rule, series, episode), across restarts and ``kill -9``; no data is not recovery; late readings
evaluated in sample-time order. docs/alerts.md is the prose version.

Modules: :mod:`alerts.machine` (the pure state machine), :mod:`alerts.rules` (rules from the manifest),
:mod:`alerts.store` (SQLite), :mod:`alerts.engine` (one pass), :mod:`alerts.source` (InfluxDB in),
:mod:`alerts.service` (the live process), :mod:`alerts.backtest`; the `pilotwatch alerts` command is
:mod:`commands.alerts_cli`.
"""
