"""The command layer: the ``pilotwatch`` command, the demo and the local stack.

Contract: this package sits above every service. It assembles the subcommands each package contributes
(``<package>.cli.register``), starts and stops the one-machine stack (Mosquitto and InfluxDB as user processes),
and runs the demo of a whole simulated fleet. It may import any package; no package imports it (checked by
``lint-imports``, see docs/architecture.md).
"""
