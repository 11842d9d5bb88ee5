"""Finding, reading and checking checkpoint files: the one place for weights.

Every released AniPortrait file is loaded *strictly*: each key the module expects must be in the
file with the right shape and nothing may be left over (the original silently dropped keys, see
reference quirk 8). Mismatches raise :class:`CheckpointError` whose message names the file, the
folder it came from and the first offending keys with expected vs found shapes, or, when the file is
recognisably another model's (by its key names), says which one it is.

Unreadable files give one sentence naming the file and folder; the reading library's own text only goes
to the log: a pickle holding code or objects is refused (``weights_only=True`` is never relaxed), a cut
or foreign file is "truncated or not a checkpoint".
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


#: layouts :func:`identify_layout` recognises -> how messages name them
LAYOUT_NAMES = {
    "audio2mesh": "audio2mesh.pt (Audio2Mesh)",
    "audio2pose": "audio2pose.pt (Audio2Pose)",
    "reference_unet": "reference_unet.pth (ReferenceNet)",
    "denoising_unet": "denoising_unet.pth (denoising UNet)",
    "motion_module": "motion_module.pth (motion module)",
    "pose_guider": "pose_guider.pth (PoseGuider)",
    "sd_vae": "a Stable Diffusion VAE",
    "clip_vision": "a CLIP vision encoder",
    "sd_checkpoint": "a full Stable Diffusion checkpoint",
    "wav2vec2": "a bare wav2vec2 model",
}


def identify_layout(keys: Iterable[str]) -> str | None:
    """Which model a state dict belongs to, from its key names alone (a key of :data:`LAYOUT_NAMES`, or None).

    Only key prefixes are used, so small test models are recognised like the full-size release files.
    """
    keys = set(keys)
    if not keys:
        return None

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("model.diffusion_model."):
        return "sd_checkpoint"
    if "visual_projection.weight" in keys or has("vision_model."):
        return "clip_vision"
    if "quant_conv.weight" in keys and has("encoder.down") and has("decoder.up"):
        return "sd_vae"
    if has("audio_encoder."):
        if has("transformer_decoder.") or has("pose_map") or "id_embed.weight" in keys:
            return "audio2pose"
        if has("out_fn."):
            return "audio2mesh"
        return None
    if has("feature_extractor.conv_layers.") and has("encoder.layers."):
        return "wav2vec2"
    if "final_proj.weight" in keys and has("conv_layers."):
        return "pose_guider"
    motion = [k for k in keys if ".motion_modules." in k]
    if motion and len(motion) == len(keys):
        return "motion_module"
    if "conv_in.weight" in keys and has("down_blocks."):
        return "denoising_unet" if ("conv_out.weight" in keys or motion) else "reference_unet"
    return None


def expect_layout(state_dict: Mapping[str, object], expected: str, file_label: str) -> None:
    """Refuse another recognisable model's file before anything is built from its shapes.

    ``expected`` is a key of :data:`LAYOUT_NAMES`. Files whose layout is not recognised pass (the strict
    key/shape check that follows reports them).
    """
    found = identify_layout(state_dict.keys())
    if found is not None and found != expected:
        log.warning("%s: its %d keys look like %s, not %s (first keys: %s)", file_label, len(state_dict),
                    found, expected, ", ".join(list(state_dict)[:MAX_KEYS_IN_MESSAGE]))
        raise CheckpointError(
            f"{file_label} is another model's file: expected {LAYOUT_NAMES[expected]}, found {LAYOUT_NAMES[found]}."
        )


def _unsafe_pickle(exc: BaseException) -> bool:
    """True when torch's weights-only unpickler refused the file for holding code/objects (not for being junk)."""
    import pickle

    text = str(exc)
    if not isinstance(exc, pickle.UnpicklingError) or "weights only load failed" not in text.lower():
        return False
    # "Unsupported operand N": the bytes are no pickle torch writes (text, HTML, other format) -> not a checkpoint
    return "unsupported operand" not in text.lower()


def _read_error(path: Path, exc: BaseException) -> CheckpointError:
    """The one-sentence error for a file that could not be read (the library's own text goes to the log only)."""
    label = file_label(path)
    log.warning("reading checkpoint %s failed: %s: %s", path, type(exc).__name__, exc)
    if _unsafe_pickle(exc):
        return CheckpointError(f"{label} contains code or objects and was refused for your safety.")
    return CheckpointError(f"{label} is truncated or not a checkpoint: download it again.")


def _torch_load(path: Path, mmap: bool) -> object:
    """``torch.load`` with ``weights_only=True`` (never anything else); ``mmap`` only for zip checkpoints."""
    import zipfile

    if mmap and zipfile.is_zipfile(path):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except TypeError:  # torch < 2.1 has no mmap
            pass
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _unwrap(sd: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        log.warning("checkpoint %s holds %s, not a state dict of tensors", path, type(sd).__name__)
        raise CheckpointError(f"{file_label(path)} is truncated or not a checkpoint: download it again.")
    return dict(sd)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pt``/``.pth``/``.ckpt``/``.bin`` (torch.save, weights only) or ``.safetensors`` file.

    A checkpoint that wraps its weights in ``{"state_dict": ...}`` is unwrapped. Every failure is a
    one-sentence :class:`CheckpointError` naming the file and folder: a missing file, a pickle holding
    code or objects (refused, never loaded unsafely), a truncated or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path.name}' was not found in folder '{path.parent}'.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = _torch_load(path, mmap=False)
    except Exception as exc:  # corrupt/truncated/pickle with code: all are user-fixable file problems
        raise _read_error(path, exc) from None
    return _unwrap(sd, path)


def read_key_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a checkpoint without reading its tensor data (safetensors header / memory-mapped zip).

    Raises the same one-sentence :class:`CheckpointError` s as :func:`read_state_dict`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path.name}' was not found in folder '{path.parent}'.")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        sd = _torch_load(path, mmap=True)
    except Exception as exc:
        raise _read_error(path, exc) from None
    return {k: tuple(v.shape) for k, v in _unwrap(sd, path).items()}


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
    if not problem:
        return
    want, got = identify_layout(expected), identify_layout(found)
    if want is not None and got is not None and want != got:
        log.warning("%s does not match the %s layout: %s", file_label, what, problem)
        raise CheckpointError(
            f"{file_label} is another model's file: expected {LAYOUT_NAMES[want]}, found {LAYOUT_NAMES[got]}."
        )
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
