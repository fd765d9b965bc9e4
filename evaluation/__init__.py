"""evaluation — did the pilot work? Before/after and BACI effects, compliance, coverage, and the evidence pack.

In: QC-flagged readings stored in InfluxDB (measurements ``reading`` and ``qc``, read through
:class:`pilotwatch.influx.InfluxV1`), the pilot manifest (periods per site, control sites, limits, the city's time
zone). Out: typed estimates (estimate, interval, method, n, coverage) per site x parameter, and an evidence pack
(report.html, summary.json, data as Parquet and CSV with flags and provenance, the manifest, METHODS.md, SHA256SUMS).

Guarantees: only QC-good readings (optionally also suspect) enter an estimate; periods are the manifest's, on local
dates of the city's time zone; every interval respects autocorrelation (block bootstrap with a stated
Politis-White block length, HAC errors); estimators equal statsmodels and arch on fixed data (tests hold them to
1e-9); ``pilotwatch evaluate calibrate`` measures coverage on simulated pilots with a known effect.

Modules:

- :mod:`evaluation.bootstrap` — Politis-White block length, stationary/circular resampling (Numba kernels in
  ``evaluation._kernels``, flags in ``evaluation._numba``).
- :mod:`evaluation.hac` — OLS with Newey-West and Driscoll-Kraay covariance.
- :mod:`evaluation.estimators` — pure before/after and BACI estimators returning :class:`Estimate`.
- :mod:`evaluation.compliance`, :mod:`evaluation.bins`, :mod:`evaluation.coverage` — limits by the statistic each
  standard names, waste-bin and effluent metrics, coverage and gaps.
- :mod:`evaluation.data` — reading QC-joined series from InfluxDB; :mod:`evaluation.evaluate` — one city.
- :mod:`evaluation.report` — the evidence pack. The simulated calibration (:mod:`commands.evaluation_calibrate`,
  simulator → analytics → these estimators) and ``pilotwatch evaluate`` sit in the command layer.
"""
