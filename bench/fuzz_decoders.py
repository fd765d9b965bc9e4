"""The long fuzz of ingest's decoders: 1,000,000 inputs by default, 0 crashes expected.

The same inputs and oracle as the bounded CI run (tests/reliability/decoder_inputs.py): readings, status and ack
payloads, valid ones with hostile values put in by hypothesis, raw bytes and arbitrary JSON; each must be accepted
or refused with a reason by its decoder, and readings and status payloads by the whole intake stage as well. Unlike
CI, every chunk draws new inputs (a new seed per chunk, printed), spread over worker processes.

    .venv/bin/python bench/fuzz_decoders.py [--cases 1000000] [--workers 2] [--chunk 10000]
    make fuzz

Prints the inputs tried per decoder, accepted and refused by reason, the rate, and the number of crashes; exits 1
on the first crash with the input hypothesis shrank it to.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.reliability.decoder_inputs import (
    IntakeHarness,
    Tally,
    ack_inputs,
    check_decoder,
    readings_inputs,
    status_inputs,
)

KINDS = ("readings", "status", "ack")
STRATEGIES: dict[str, Any] = {"readings": readings_inputs, "status": status_inputs, "ack": ack_inputs}


def run_chunk(job: tuple[str, int, int]) -> tuple[str, int, int, dict[str, int], str | None]:
    """One hypothesis run of ``n`` inputs of one kind; (kind, seed, accepted, refused by reason, crash or None)."""
    kind, n, chunk_seed = job
    tally = Tally()
    intake = IntakeHarness()

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @seed(chunk_seed)
    @given(STRATEGIES[kind]())
    def fuzz(case: tuple[str, bytes]) -> None:
        check_decoder(kind, *case, tally)
        if kind != "ack":
            intake.check(*case)

    crash = None
    try:
        fuzz()
    except Exception as exc:  # noqa: BLE001 - a crash is the finding this command reports
        crash = f"{type(exc).__name__}: {exc}"[:4000]
    return kind, chunk_seed, tally.accepted, dict(tally.refused or {}), crash


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=max(1, (multiprocessing.cpu_count() or 2)))
    parser.add_argument("--chunk", type=int, default=10_000)
    args = parser.parse_args()
    if args.cases <= 0 or args.chunk <= 0 or args.workers <= 0:
        parser.error("--cases, --chunk and --workers must be positive")
    rng = random.Random()
    jobs = []
    left = args.cases
    i = 0
    while left > 0:
        n = min(args.chunk, left)
        jobs.append((KINDS[i % len(KINDS)], n, rng.randrange(2**32)))
        left -= n
        i += 1
    accepted: Counter[str] = Counter()
    refused: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
    crashes = 0
    started = time.monotonic()
    done = 0
    with multiprocessing.Pool(args.workers) as pool:
        for kind, chunk_seed, ok, by_reason, crash in pool.imap_unordered(run_chunk, jobs):
            accepted[kind] += ok
            refused[kind].update(by_reason)
            done += ok + sum(by_reason.values())
            if crash is not None:
                crashes += 1
                print(f"CRASH in {kind} (seed {chunk_seed}):\n{crash}", flush=True)
                pool.terminate()
                break
            elapsed = time.monotonic() - started
            print(f"{done:>10,} inputs, {elapsed:7.0f} s, {done / elapsed:,.0f}/s, crashes {crashes}", flush=True)
    elapsed = time.monotonic() - started
    print()
    for kind in KINDS:
        total = accepted[kind] + sum(refused[kind].values())
        reasons = ", ".join(f"{r} {n:,}" for r, n in refused[kind].most_common())
        print(f"{kind:9} {total:>10,} inputs: accepted {accepted[kind]:,}; refused {reasons}")
    print(f"total {done:,} inputs in {elapsed:.0f} s ({done / elapsed:,.0f}/s), crashes {crashes}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
