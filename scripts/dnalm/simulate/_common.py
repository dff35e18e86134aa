"""Helpers shared by the simulators: parameter resolution and checks, uint8 base codes."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np

A, C, G, T, N = 0, 1, 2, 3, 4


def _resolve(defaults: dict, params: Mapping | None, what: str) -> dict:
    """Defaults overridden key by key by ``params``; unknown keys raise ``ValueError``."""
    out = copy.deepcopy(defaults)
    if params is None:
        return out
    if not isinstance(params, Mapping):
        raise ValueError(f"{what} parameters must be a mapping, got {type(params).__name__}")
    for key, value in params.items():
        if key not in defaults:
            raise ValueError(f"unknown {what} parameter {key!r}; known: {sorted(defaults)}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"{what} parameter {key!r} must be a mapping")
            for sub in value:
                if sub not in defaults[key]:
                    raise ValueError(
                        f"unknown {what} parameter {key}.{sub!r}; known: {sorted(defaults[key])}"
                    )
            out[key].update(copy.deepcopy(dict(value)))
        else:
            out[key] = copy.deepcopy(value)
    return out


def _range(p: dict, key: str, lo_min: float = 0) -> tuple:
    value = p[key]
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and lo_min <= value[0] <= value[1]):
        raise ValueError(
            f"parameter {key!r} must be a range [lo, hi] with {lo_min} <= lo <= hi, got {value!r}"
        )
    return value[0], value[1]


def _check_fraction(p: dict, *keys: str) -> None:
    for key in keys:
        if not 0 <= p[key] <= 1:
            raise ValueError(f"parameter {key!r} must be in [0, 1], got {p[key]!r}")


def _check_count(p: dict, *keys: str, minimum: int = 0) -> None:
    for key in keys:
        if int(p[key]) != p[key] or p[key] < minimum:
            raise ValueError(f"parameter {key!r} must be an integer >= {minimum}, got {p[key]!r}")



def _rc(codes: np.ndarray) -> np.ndarray:
    """Reverse complement of codes (N stays N)."""
    codes = np.asarray(codes, dtype=np.uint8)
    return np.where(codes < 4, 3 - codes, codes)[::-1].astype(np.uint8)
