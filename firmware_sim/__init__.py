"""firmware_sim: physically plausible sensors for every device of a manifest, with faults and ground truth.

Contract:

- In: a pilot manifest and a seed. Out: for each device, drivers with the real drivers' interface
  (:class:`edge.drivers.base.Driver`), so the real edge agent runs on them unchanged; the site's environment
  (daily cycles, weather, pollution events) and named sensor faults (spike, drift, fouling,
  flat line, dropout, dead battery) injected on a schedule; and the ground truth of every sample
  (:meth:`firmware_sim.fleet.SimulatedFleet.truth`), which QC, detector and alert tests score against.
- Deterministic: the same manifest, seed and time give the same values, whatever the order of reading.
- :mod:`firmware_sim.agents` runs a whole fleet of real edge agents on simulated clocks (the demo, tests,
  benchmarks); ``pilotwatch sim run`` runs one. This package depends on :mod:`edge`; never the other way round.
"""
