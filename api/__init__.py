"""HTTP API for the three users of pilotwatch: pilot operators, city staff and evaluators.

In: requests carrying an API key (``X-API-Key``) whose role and scope (cities and/or sites) come from a keys
file; the pilot manifest; an InfluxDB that speaks InfluxQL on ``/query`` (1.x, 2.x with a DBRP mapping, 3.x).
Out: JSON for sites, latest readings, time series and device health, and a streamed CSV export with QC flags,
site role, period and provenance for evaluators.

Guarantees: a key never sees a site outside its scope (403, or 404 for what the manifest does not know); every
query is InfluxQL built from quoted identifiers and literals, never from raw user text; an export is read from
InfluxDB in time chunks and streamed, so its memory does not grow with the range asked for.
"""
