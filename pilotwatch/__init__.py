"""pilotwatch: the shared domain of the platform.

Everything that more than one part needs lives here and nowhere else:

- :mod:`pilotwatch.manifest` loads and validates the pilot manifest (cities, sites, devices, sensors, limits,
  periods, alert routing). It is the single source of truth read by every other package.
- :mod:`pilotwatch.wire` defines wire format v1 (MQTT topics and payloads) and the one validator used by both
  the edge publisher and ingest.
- :mod:`pilotwatch.influx` speaks InfluxDB: line protocol for writes, InfluxQL for queries, and the schema
  (measurement, tags, fields) every writer and reader agrees on.
- :mod:`pilotwatch.stack` starts and stops Mosquitto and InfluxDB as user processes for one machine.
- :mod:`pilotwatch.cli` is the ``pilotwatch`` command; each package registers its own subcommands.
"""

__version__ = "0.1.0"
