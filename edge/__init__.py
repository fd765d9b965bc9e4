"""edge: the agent that runs on each site's Raspberry Pi.

Contract:

- In: the device's entry in the pilot manifest (sensors, sample intervals), local settings (``PILOTWATCH_EDGE_*``
  or a TOML file) and one driver per sensor behind :class:`edge.drivers.base.Driver` (Atlas EZO, ADS1115,
  Modbus, 1-Wire, pulse counters, ultrasonic distance). Any object with that interface plugs in: the simulator
  (:mod:`firmware_sim`) does so without this package importing it.
- Out: wire-format v1 readings messages (QoS 1) and a retained status with a last will, on the device's own
  topics (:mod:`pilotwatch.wire`).
- Guarantees: every sample goes to an on-disk SQLite buffer (:mod:`edge.buffer`) before it is published, and
  leaves it only when ingest's end-to-end acknowledgement covers its sequence number
  (:meth:`pilotwatch.wire.AckMessage.covers`), so power cuts, ``kill -9`` and broker outages lose nothing; the
  buffer is bounded and counts what it dropped (``added == depth + dropped + acked``). Sequence numbers only
  increase, also across restarts.

Modules: :mod:`edge.agent` (publish, re-send, acks), :mod:`edge.buffer`, :mod:`edge.sampler`,
:mod:`edge.drivers`, :mod:`edge.clock`, :mod:`edge.settings`, :mod:`edge.cli` (``pilotwatch edge ...``).
"""
