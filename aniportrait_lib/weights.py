"""Finding, reading and checking checkpoint files: the one place for weights.

Every released AniPortrait file is loaded *strictly*: each key the module expects must be in the
file with the right shape and nothing may be left over (the original silently dropped keys, see
reference quirk 8). Mismatches raise :class:`CheckpointError` whose message names the file, the
folder it came from and the first offending keys with expected vs found shapes.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

log = logging.getLogger(__name__)

#: how many offending keys an error message lists before summarising the rest
MAX_KEYS_IN_MESSAGE = 5

StateDict = Mapping[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not match the model it is loaded into."""


def find_model_file(file_name: str, folders: Sequence[str | os.PathLike], what: str = "model") -> Path:
    """Return the first ``folder/file_name`` that exists.

    Raises CheckpointError naming the file and every folder searched when none has it.
    """
    searched = [Path(f) for f in folders]
    for folder in searched:
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    where = ", ".join(str(f) for f in searched) or "(no folders configured)"
    raise CheckpointError(
        f"{what} file '{file_name}' was not found. Searched: {where}. "
        f"Put the file in one of these folders (or add a folder through extra_model_paths.yaml)."
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pt``/``.pth``/``.ckpt``/``.bin`` (torch.save, weights only) or ``.safetensors`` file.

    A checkpoint that wraps its weights in ``{"state_dict": ...}`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path.name}' was not found in folder '{path.parent}'.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt/truncated/pickle with code: all are user-fixable file problems
        raise CheckpointError(
            f"could not read checkpoint '{path.name}' in folder '{path.parent}': {exc}. "
            f"The file may be incomplete or not a PyTorch/safetensors checkpoint; download it again."
        ) from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(
            f"checkpoint '{path.name}' in folder '{path.parent}' does not hold a state dict of tensors."
        )
    return dict(sd)


def _shape(t: torch.Tensor | Sequence[int]) -> list[int]:
    return list(t.shape) if isinstance(t, torch.Tensor) else list(t)


def _first(keys: Iterable[str]) -> tuple[list[str], int]:
    keys = list(keys)
    return keys[:MAX_KEYS_IN_MESSAGE], len(keys)


def describe_mismatch(
    expected: Mapping[str, torch.Tensor | Sequence[int]],
    found: Mapping[str, torch.Tensor | Sequence[int]],
) -> str | None:
    """Describe how ``found`` differs from ``expected`` (key -> tensor or shape); None if they match.

    Keys are reported in the expected order, so the message points at the first offending keys.
    """
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong_shape = [
        k for k in expected if k in found and _shape(expected[k]) != _shape(found[k])
    ]
    parts = []
    if wrong_shape:
        shown, n = _first(wrong_shape)
        detail = "; ".join(
            f"{k}: expected {_shape(expected[k])}, found {_shape(found[k])}" for k in shown
        )
        parts.append(f"{n} key(s) with the wrong shape, first: {detail}")
    if missing:
        shown, n = _first(missing)
        detail = "; ".join(f"{k} {_shape(expected[k])}" for k in shown)
        parts.append(f"{n} missing key(s), first: {detail}")
    if unexpected:
        shown, n = _first(unexpected)
        detail = "; ".join(f"{k} {_shape(found[k])}" for k in shown)
        parts.append(f"{n} unexpected key(s), first: {detail}")
    return ". ".join(parts) if parts else None


def check_state_dict(
    expected: Mapping[str, torch.Tensor | Sequence[int]],
    found: Mapping[str, torch.Tensor | Sequence[int]],
    file_label: str,
    what: str,
) -> None:
    """Raise CheckpointError if ``found`` does not match ``expected`` key for key and shape.

    ``file_label`` names the file and folder (e.g. ``"'audio2mesh.pt' in folder '/models/aniportrait'"``).
    """
    problem = describe_mismatch(expected, found)
    if problem:
        raise CheckpointError(
            f"{file_label} does not match the {what} layout: {problem}. "
            f"Check that you picked the right file for this input (the released AniPortrait files "
            f"are audio2mesh.pt, audio2pose.pt, reference_unet.pth, denoising_unet.pth, "
            f"motion_module.pth and pose_guider.pth)."
        )


def file_label(path: str | os.PathLike | None, fallback: str = "checkpoint") -> str:
    """``"'name' in folder 'dir'"`` for messages."""
    if path is None:
        return f"the {fallback}"
    p = Path(path)
    return f"'{p.name}' in folder '{p.parent}'"
