"""Fixtures of the reliability tests: the in-process ingest of tests/ingest (same stack, same clean-up)."""

from tests.ingest.conftest import start_ingest

__all__ = ["start_ingest"]
