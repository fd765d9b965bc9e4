"""The one place where the evaluation's Numba compile flags are decided.

``analytics._numba`` is private to the analytics core, so the evaluation service keeps its own flags here, chosen
for the same reasons:

- ``cache=True``: ``pilotwatch evaluate`` is a short command; compiled kernels are stored in ``__pycache__`` so
  a second run does not pay the compile again.
- ``fastmath=False``: fast-math lets LLVM reorder sums and assume there is no NaN; the estimators must equal
  statsmodels and arch to 1e-9 and treat a missing stratum (NaN) as missing.
- ``error_model="numpy"``: a division by zero gives inf/NaN as in NumPy instead of raising.
- ``nogil=True``: the API serves a report from a worker thread; kernels should not hold the GIL.

``NUMBA_DISABLE_JIT=1`` is honoured by Numba itself: the kernels then run as plain Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])

FLAGS: dict[str, Any] = {"cache": True, "fastmath": False, "error_model": "numpy", "nogil": True}


def kernel(fn: F) -> F:
    """Compile ``fn`` as a serial nopython kernel with the evaluation's flags."""
    return numba.njit(**FLAGS)(fn)  # type: ignore[no-any-return]
