"""Counter-based randomness: the same (seed, name, time) gives the same number in any process, in any order.

A simulated fleet must be deterministic for a seed no matter which device samples first or whether a run was
restarted half-way, so no sample draws from a shared stateful generator. Every random quantity is a pure function
of a 64-bit key built from stable strings (never Python's salted ``hash``) and integers.
"""

from __future__ import annotations

import hashlib
import math
import random

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def stable_key(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def mix(x: int) -> int:
    """SplitMix64's finaliser: a bijection on 64-bit integers with good avalanche."""
    x = (x + _GOLDEN) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def uniform(key: int, counter: int) -> float:
    """A number in [0, 1) for (key, counter)."""
    return (mix(key ^ mix(counter & _MASK)) >> 11) * (1.0 / (1 << 53))


def normal(key: int, counter: int) -> float:
    """A standard normal number for (key, counter) (Box-Muller)."""
    u1 = uniform(key, 2 * counter) or 1e-300
    u2 = uniform(key, 2 * counter + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def rng(*parts: object) -> random.Random:
    """A generator for one bounded piece of a schedule (one site, one week): seeded, so reproducible."""
    return random.Random(stable_key(*parts))


def poisson(generator: random.Random, mean: float) -> int:
    """Knuth's method; the means here are a handful of events per week."""
    if mean <= 0:
        return 0
    limit, product, count = math.exp(-mean), generator.random(), 0
    while product > limit:
        product *= generator.random()
        count += 1
    return count
