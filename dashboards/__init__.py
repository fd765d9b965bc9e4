"""Grafana dashboards as code, generated from the pilot manifest.

In: a :class:`pilotwatch.manifest.Manifest`. Out: Grafana dashboard JSON (one per city, plus a fleet overview)
whose panels query an InfluxDB datasource in InfluxQL with Grafana's ``$timeFilter`` and ``$__interval``
macros, and a push of the datasource, a folder per programme and the dashboards through the Grafana HTTP API
(``grafana-client``). Nothing about a site is typed here: rows, panels, units and limit thresholds all come
from the manifest, so a new site or device appears on the next ``pilotwatch dashboards build``.
"""
