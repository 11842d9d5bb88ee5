"""The golden cases the original AniPortrait code produced (../shared/reference): loading a case, reading its
tolerance, measuring and reporting the error against it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from support.paths import reference_dir


def golden_case(kind: str) -> Path:
    """Folder of golden case ``kind``; fails (not skips) when the reference is absent."""
    folder = reference_dir() / "golden" / kind
    assert (folder / "case.json").is_file(), f"golden case {kind} not found at {folder}"
    return folder


def load_case(kind: str) -> tuple[Path, dict]:
    """The folder of golden case ``kind`` and its case.json."""
    folder = golden_case(kind)
    return folder, json.loads((folder / "case.json").read_text())


def manifest(name: str) -> dict[str, list[int]]:
    """A manifest of the reference (``manifests/<name>.json``: parameter name -> shape)."""
    return json.loads((reference_dir() / "manifests" / f"{name}.json").read_text())


#: a number in a case.json tolerance text, not part of a word (``out_fea0``) or a version (``0.10.11``)
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")


def tolerance_numbers(text: str) -> list[float]:
    """Every number in a case.json tolerance text, in order."""
    return [float(x) for x in _NUMBER.findall(text)]


def tolerance(text: str) -> float:
    """The first number of a case.json tolerance text (``"abs 1e-4 (fp32 CPU); ..."`` -> 1e-4)."""
    numbers = tolerance_numbers(text)
    assert numbers, f"no number in tolerance {text!r}"
    return numbers[0]


def max_abs_err(a, b) -> float:
    """Max abs difference of two same-shaped arrays/tensors, computed in float64 (0 for empty ones)."""
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    b = b.detach().cpu().numpy() if hasattr(b, "detach") else np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape} != expected {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def report(name: str, err: float, limit: float) -> None:
    """Print a golden comparison's measured error and assert it is within the tolerance."""
    print(f"[golden] {name}: max abs err {err:.3g} (tolerance {limit:g})")
    assert err <= limit, f"{name}: {err} > {limit}"
