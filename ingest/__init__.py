"""ingest: MQTT → validation → InfluxDB, with end-to-end acknowledgement and a gap ledger.

Contract:

- In: wire-format v1 messages (:mod:`pilotwatch.wire`) from ``pilotwatch/v1/devices/+/readings`` (QoS 1, a
  persistent MQTT 5 session, optionally a shared subscription ``$share/<group>/...`` split over several workers)
  and retained ``.../status`` messages.
- Out: every valid reading written to InfluxDB (measurement ``reading``, schema of :mod:`pilotwatch.influx`);
  every status as a ``device_status`` point; every invalid message or reading in the dead-letter store with its
  raw payload, reason and time; counters, a Prometheus /metrics endpoint and a status file.
- Guarantees: a message is acknowledged to the broker only once its readings are safe (in InfluxDB, in ingest's
  fsynced disk spool, or in the dead-letter store); each device is told on ``.../<id>/ack``
  (:class:`pilotwatch.wire.AckMessage`) which of its sequence numbers are safe, so the edge can keep everything
  else and re-send it. Re-sends are dropped by (device, seq) within a window and are otherwise harmless, because a
  point's identity is (measurement, tags, sample time). 401/403 from InfluxDB stop ingest with a fatal status.

Modules: :mod:`ingest.settings` (``PILOTWATCH_INGEST_*``), :mod:`ingest.validate`, :mod:`ingest.writers` (v1
``/write`` and influxdb-client v2 behind one interface), :mod:`ingest.spool`, :mod:`ingest.deadletter`,
:mod:`ingest.ledger` (``read_ledger(path)`` works without a running ingest), :mod:`ingest.metrics`,
:mod:`ingest.service` (:class:`~ingest.service.IngestService`) and :mod:`ingest.cli` (``pilotwatch ingest ...``).
"""
