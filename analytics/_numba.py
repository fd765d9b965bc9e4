"""The one place where Numba compile flags are decided.

Every kernel in :mod:`analytics._kernels` is decorated with :func:`kernel`. The flags are:

- ``cache=True``: compiled machine code is stored in ``__pycache__`` so a short command (``pilotwatch qc`` on a
  small file, a test run) does not pay the compile again.
- ``fastmath=False``: fast-math lets LLVM assume there is no NaN, which would break the missing-value (flag 9)
  semantics that every QC test relies on.
- ``error_model="numpy"``: a division by zero gives inf/NaN as in NumPy instead of raising.
- ``nogil=True``: kernels release the GIL so the live service can evaluate series in threads.
- ``parallel``: only for element-wise kernels, where ``prange`` splits the work across cores.

``NUMBA_DISABLE_JIT=1`` is honoured by Numba itself: the kernels then run as plain Python, which is how coverage
and debuggers see them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])

JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")

BASE_FLAGS: dict[str, Any] = {"cache": True, "fastmath": False, "error_model": "numpy", "nogil": True}

prange = numba.prange


def kernel(fn: F) -> F:
    """Compile ``fn`` as a serial nopython kernel with the project's flags."""
    return numba.njit(**BASE_FLAGS)(fn)  # type: ignore[no-any-return]


def parallel_kernel(fn: F) -> F:
    """Compile ``fn`` as a parallel nopython kernel (element-wise work with ``prange``)."""
    return numba.njit(parallel=True, **BASE_FLAGS)(fn)  # type: ignore[no-any-return]
