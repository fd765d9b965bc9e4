"""ingest: MQTT → validation → InfluxDB, with end-to-end acknowledgement and a gap ledger.

Contract:

- In: wire-format v1 messages (:mod:`pilotwatch.wire`) from ``pilotwatch/v1/devices/+/readings`` (QoS 1, a
  persistent MQTT 5 session, optionally a shared subscription ``$share/<group>/...`` split over several workers)
  and retained ``.../status`` messages.
- Out: every valid reading written to InfluxDB (measurement ``reading``, schema of :mod:`pilotwatch.schema`);
  every status as a ``device_status`` point; the gap ledger as ``delivery`` points (the documented interface for
  anyone who wants delivery state); every invalid message or reading in the bounded dead-letter store with its
  raw payload, reason and time; counters, liveness, a Prometheus /metrics endpoint and a status file.
- Guarantees: a message is acknowledged to the broker only once its readings are safe (in InfluxDB, in ingest's
  fsynced disk spool, or in the dead-letter store); each device is told on ``.../<id>/ack``
  (:class:`pilotwatch.wire.AckMessage`) which of its sequence numbers are safe, so the edge can keep everything
  else and re-send it. Re-sends are dropped by (device, seq) within a window and are otherwise harmless, because a
  point's identity is (measurement, tags, sample time); a new seq that would overwrite a stored sample with
  another value is dead-lettered instead. 401/403 from InfluxDB, or a thread that cannot go on, stop ingest with
  a fatal status and a non-zero exit.

Stages (each tested without MQTT): :mod:`ingest.intake` (validate and dedupe, with :mod:`ingest.validate` and
:mod:`ingest.conflicts`), :mod:`ingest.store` (dead letters, the classified writer of
:mod:`pilotwatch.influx_writer` re-exported by :mod:`ingest.writers`, retry, split, :mod:`ingest.spool`) and
:mod:`ingest.acknowledge` (:mod:`ingest.ledger`, PUBACK, end-to-end ack), composed in :mod:`ingest.service`
(:class:`~ingest.service.IngestService`: threads, MQTT, lifecycle). Also :mod:`ingest.settings`
(``PILOTWATCH_INGEST_*``), :mod:`ingest.deadletter`, :mod:`ingest.delivery` (the ledger published to InfluxDB),
:mod:`ingest.metrics` and :mod:`ingest.cli` (``pilotwatch ingest ...``).
"""
