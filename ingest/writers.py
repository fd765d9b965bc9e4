"""Ingest's InfluxDB writers: the classified writer of :mod:`pilotwatch.influx_writer`, re-exported under the names
ingest has always used (its settings build one with :meth:`ingest.settings.IngestSettings.make_writer`)."""

from pilotwatch.influx_writer import (
    OK,
    FatalWriteError,
    Outcome,
    RetryPolicy,
    V1Writer,
    V2Writer,
    Writer,
    WriteResult,
    classify_status,
    parse_retry_after,
    write_split,
    write_with_retry,
)

__all__ = [
    "OK",
    "FatalWriteError",
    "Outcome",
    "RetryPolicy",
    "V1Writer",
    "V2Writer",
    "WriteResult",
    "Writer",
    "classify_status",
    "parse_retry_after",
    "write_split",
    "write_with_retry",
]
