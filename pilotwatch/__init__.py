"""pilotwatch: the shared domain of the platform.

Everything that more than one part needs lives here and nowhere else:

- :mod:`pilotwatch.manifest` loads and validates the pilot manifest (cities, sites, devices, sensors, limits,
  periods, alert routing). It is the single source of truth read by every other package.
- :mod:`pilotwatch.wire` defines wire format v1 (MQTT topics and payloads) and the one validator used by both
  the edge publisher and ingest.
- :mod:`pilotwatch.schema` is the storage schema: every InfluxDB measurement, its tags and field types, the
  QARTOD flag enum and the one line-protocol writer.
- :mod:`pilotwatch.influx` is a small InfluxDB v1 HTTP client (``/write``, InfluxQL on ``/query``).
- :mod:`pilotwatch.qc_config` is the QC configuration model (a sensor's ``qc:`` section, ``pilotwatch qc --config``).
- :mod:`pilotwatch.alerting` is the alert-transition outbox shared by the alert engine and the notifier.
- :mod:`pilotwatch.settings` holds what every command shares (home, manifest, the local stack's addresses).

This package imports no service; the ``pilotwatch`` command, the demo and the local stack sit above every
service in :mod:`commands` (docs/architecture.md).
"""

__version__ = "0.1.0"
