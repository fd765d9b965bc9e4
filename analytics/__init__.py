"""analytics — the science: QARTOD quality control, anomaly detection and fault/event labels.

In: readings as arrays (values, sample times) per parameter, or a table of parameters on one time axis, or the
``reading`` measurement in InfluxDB. Out: per reading, the QARTOD flag of each configured test and their
aggregate (1 good, 2 not evaluated, 3 suspect, 4 fail, 9 missing — the values of ioos_qc), an anomaly score
(alarm units: >= 1 is anomalous) and flag, and a label: ``good``, ``fault`` (the sensor), ``event`` (the
water) or ``missing``. Pollution alerts may only use ``event`` readings.

Modules:

- :mod:`analytics.qartod` — public ``<check>_test(values, times, **params) -> uint8 flags`` and ``aggregate``;
  flag for flag equal to ioos_qc on regularly sampled data, better where ioos_qc is weak (docs/qc.md).
- :mod:`analytics.detectors` — streaming detectors (robust z, EWMA, CUSUM, time-of-day baseline, drift/fouling)
  with ``score_one``/``learn_one``, batch ``score_many`` equal to streaming, and checkpoints.
- :mod:`analytics.labels` — fault vs event from QC results, agreement between parameters and device health.
- :mod:`pilotwatch.qc_config` — pydantic models (stdlib + pydantic only); ``ParameterQC`` types the ``qc:`` section
  of a sensor in the manifest, ``QCConfig`` a configuration file. Unknown names are errors.
- :mod:`analytics.pipeline` — everything configured for a site, over many parameters at once.
- :mod:`analytics.service` — the live service: InfluxDB in, ``qc`` measurement out, late data re-evaluated.
- :mod:`analytics.csvqc` and :mod:`analytics.cli` — ``pilotwatch qc INPUT.csv --time-column T --out OUT.csv``
  (``analytics.cli.register(subparsers)`` adds the subcommand).
- ``analytics._kernels`` / ``analytics._numba`` — private Numba kernels and their compile flags.
"""
