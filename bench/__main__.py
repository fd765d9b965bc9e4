"""Run every benchmark in this folder, one after the other: ``python -m bench [--quick] [NAME ...]``.

Each ``bench_*.py`` is a script that starts the services it needs, measures its anchor in the same run and prints
its own table; this runner only sequences them (they must not overlap: the machine is small and shared) and
says which failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    available = sorted(p.stem for p in HERE.glob("bench_*.py"))
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[[], *available], help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to each benchmark (smaller sizes)")
    args = parser.parse_args(argv)
    failed = []
    for name in args.names or available:
        command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])]
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, check=False, cwd=HERE.parent)
        print(f"=== {name}: exit {result.returncode} after {time.perf_counter() - start:.0f} s ===", flush=True)
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
