"""Finding, reading and checking checkpoint files: the one place for weights.

Every released AniPortrait file is loaded *strictly*: each key the module expects must be in the
file with the right shape and nothing may be left over (the original silently dropped keys, see
reference quirk 8). Mismatches raise :class:`CheckpointError` whose message names the file, the
folder it came from and the first offending keys with expected vs found shapes, or, when the file is
recognisably another model's (by its key names), says which one it is.

Unreadable files give one sentence naming the file and folder; the reading library's own text only goes
to the log, without its advice to load the file unsafely: a pickle holding code or objects is refused
(``weights_only=True`` is never relaxed; a pickle protocol torch's safe reader does not know is read for its
globals without running it), a cut or foreign file is "truncated or not a checkpoint".
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


#: sentences of torch's weights-only error that advise switching the safety check off (loading with
#: ``weights_only=False``, allowlisting the refused globals); never passed on, not even to the log
_UNSAFE_ADVICE = ("weights_only` set to `false", "weights_only=false", "trust", "safe_globals", "allowlist",
                  "can still be loaded", "two options", "recommended steps", "file an issue", "changed the default")

#: globals a torch checkpoint's pickle names (tensor and storage rebuilding, OrderedDict, bytes); any other
#: is code or an object
_CHECKPOINT_GLOBALS = ("torch._utils._rebuild_", "torch.storage._load_from_bytes", "torch.device", "torch.Size",
                       "collections.OrderedDict", "_codecs.encode")
_GLOBAL_OPS = {"GLOBAL", "INST"}
_OBJECT_OPS = {"OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"}


def without_unsafe_advice(text: str) -> str:
    """``text`` (a reading library's error) without its advice to switch the safety check off."""
    import re

    kept = []
    for line in str(text).splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)  # torch bolds its advice with terminal escapes
        sentences = re.split(r"(?<=[.:])\s+", line.strip())
        kept += [s for s in sentences if s and not any(a in s.lower() for a in _UNSAFE_ADVICE)]
    return " ".join(kept)


def _pickle_globals(path: Path, max_pickles: int = 5, max_ops: int = 100_000) -> list[str] | None:
    """The globals (``module.name``) and object opcodes in a pickle file's first pickles, read without running it.

    A zip checkpoint's ``data.pkl`` is read; None when the file is no pickle (text, HTML, cut before any opcode).
    """
    import io
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not names:
                return None
            stream: io.BufferedIOBase = io.BytesIO(archive.read(names[0]))
    else:
        stream = open(path, "rb")
    found: list[str] = []
    ops = 0
    try:
        with stream:
            for _ in range(max_pickles):
                strings: list[str] = []
                for op, arg, _pos in pickletools.genops(stream):
                    ops += 1
                    if op.name in _GLOBAL_OPS:
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL":
                        found.append(".".join(strings[-2:]))
                    elif op.name in _OBJECT_OPS:
                        found.append(op.name)
                    elif isinstance(arg, str):
                        strings.append(arg)
                    if ops > max_ops:
                        return found
    except Exception:  # the end of the pickles (raw tensor data follows) or a cut file: keep what was read
        pass
    return found if ops else None


def _unsafe_pickle(path: Path, exc: BaseException) -> bool:
    """True when torch's weights-only unpickler refused the file for holding code/objects (not for being junk)."""
    import pickle

    text = str(exc).lower()
    if not isinstance(exc, pickle.UnpicklingError) or "weights only load failed" not in text:
        return False
    if "unsupported operand" not in text:
        return True  # an unsupported global or type: torch named the code or object it refused
    # "Unsupported operand N": bytes torch's reader does not know, a text or HTML file or a pickle in a
    # protocol torch does not write (0, 4, 5); read its globals without running it
    names = _pickle_globals(path)
    return bool(names) and not all(_checkpoint_global(n) for n in names)


def _checkpoint_global(name: str) -> bool:
    """True for a global torch itself writes into checkpoints (``torch.FloatStorage``, ``torch.float16``, ...)."""
    if name.startswith(_CHECKPOINT_GLOBALS):
        return True
    module, _, attr = name.rpartition(".")
    return module == "torch" and (attr.endswith("Storage") or isinstance(getattr(torch, attr, None), torch.dtype))


def _read_error(path: Path, exc: BaseException) -> CheckpointError:
    """The one-sentence error for a file that could not be read (the library's own text goes to the log only,
    without its advice to load the file unsafely)."""
    label = file_label(path)
    log.warning("reading checkpoint %s failed: %s: %s", path, type(exc).__name__, without_unsafe_advice(str(exc)))
    if _unsafe_pickle(path, exc):
        return CheckpointError(f"{label} contains code or objects and was refused for your safety.")
    return CheckpointError(f"{label} is truncated or not a checkpoint: download it again.")


def _torch_load(path: Path, mmap: bool) -> object:
    """``torch.load`` with ``weights_only=True`` (never anything else); ``mmap`` only for zip checkpoints.

    torch's warning about a pickle protocol it did not write (asking to file an issue) is kept from the
    user: such a file either loads or gets this module's one sentence.
    """
    import warnings
    import zipfile

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
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
