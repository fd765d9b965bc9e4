"""A city's evaluation computed once and served from memory for ``evaluation_cache_s`` (docs/api.md).

An evaluation reads months of a city's readings and bootstraps thousands of replicates: 10 to 45 s. Evaluators
read the same numbers many times while writing a report, and the answer to a before/after question does not
change minute by minute, so each (city, QC acceptance, replicates, scheme) is computed once per period; the
response's ``as_of`` says when. Requests that arrive while the same evaluation is being computed wait for it
instead of starting another (one computation per key at a time), which also bounds what a burst of requests
can cost. At most ``max_entries`` evaluations are kept; the oldest goes first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    made_at: float
    evaluation: T


class EvaluationCache(Generic[T]):
    """Generic in what it keeps, so the API's own modules need not import the evaluation service for it."""

    def __init__(self, ttl_s: float, max_entries: int = 16, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[Hashable, _Entry[T]] = {}
        self._computing: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached evaluation for ``key`` when it is younger than ``ttl_s``, else ``compute()``'s."""
        with self._guard:
            lock = self._computing.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                entry = self._entries.get(key)
                if entry is not None and self._clock() - entry.made_at < self.ttl_s:
                    return entry.evaluation
            evaluation = compute()
            if self.ttl_s > 0:
                with self._guard:
                    self._entries[key] = _Entry(self._clock(), evaluation)
                    while len(self._entries) > self.max_entries:
                        oldest = min(self._entries, key=lambda k: self._entries[k].made_at)
                        del self._entries[oldest]
            return evaluation
