"""gradc's random number generator: one NumPy Generator, reseeded by `manual_seed`.

Streams are reproducible for a seed but are not PyTorch's streams.
"""
from __future__ import annotations

import numpy as np

_gen = np.random.Generator(np.random.PCG64(0))


def manual_seed(seed: int):
    global _gen
    _gen = np.random.Generator(np.random.PCG64(int(seed)))
    return _gen


def seed() -> int:
    s = int(np.random.SeedSequence().entropy % (2**63))
    manual_seed(s)
    return s


def get_rng_state():
    return _gen.bit_generator.state


def set_rng_state(state):
    _gen.bit_generator.state = state


def generator() -> np.random.Generator:
    return _gen


def uniform(shape, low, high, dtype):
    return _gen.uniform(low, high, size=tuple(shape)).astype(dtype.np)


def normal(shape, mean, std, dtype):
    return (_gen.standard_normal(size=tuple(shape)) * std + mean).astype(dtype.np)
