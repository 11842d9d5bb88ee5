"""Checkpoint errors are one sentence naming the file and folder; the reading library's text only reaches the log."""
from __future__ import annotations

import logging
import re

import pytest
import torch
from safetensors.torch import save_file

from aniportrait_lib import weights
from support import random_weights
from aniportrait_lib.audio import models
from aniportrait_lib.networks import loading
from aniportrait_lib.weights import CheckpointError

RAW_TEXTS = ("weights_only", "arbitrary code", "PytorchStreamReader", "central directory", "miniz",
             "deserializing", "Unpickler", "trusted source")


class Custom:
    """An object a weights-only load must refuse."""

    def __init__(self):
        self.payload = [1, 2, 3]


def _exact(path, sentence: str) -> str:
    return "^" + re.escape(f"'{path.name}' in folder '{path.parent}' {sentence}") + "$"


def _assert_clean(exc: pytest.ExceptionInfo) -> None:
    msg = str(exc.value)
    for raw in RAW_TEXTS:
        assert raw not in msg, f"{raw!r} leaked into: {msg}"
    # no raw text in a chained traceback either
    assert exc.value.__cause__ is None and (exc.value.__context__ is None or exc.value.__suppress_context__)


def _truncate(src, dst, keep: float = 0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.mark.parametrize("reader", [weights.read_state_dict, weights.read_key_shapes])
def test_pickle_with_code_is_refused_for_safety(tmp_path, caplog, reader):
    path = tmp_path / "audio2mesh.pt"
    torch.save({"in_fn.weight": torch.zeros(2, 2), "extra": Custom()}, path)
    with caplog.at_level(logging.WARNING, logger="aniportrait_lib.weights"):
        with pytest.raises(CheckpointError, match=_exact(path, "contains code or objects and was refused for your safety.")) as err:
            reader(path)
    _assert_clean(err)
    assert isinstance(err.value, ValueError)
    assert "Custom" in caplog.text  # torch's own explanation is in the log


@pytest.mark.parametrize("reader", [weights.read_state_dict, weights.read_key_shapes])
def test_truncated_pt_is_named_truncated(tmp_path, caplog, reader):
    good = tmp_path / "good.pt"
    torch.save(random_weights.audio2mesh_state_dict(0), good)
    path = _truncate(good, tmp_path / "audio2mesh.pt")
    with caplog.at_level(logging.WARNING, logger="aniportrait_lib.weights"):
        with pytest.raises(CheckpointError, match=_exact(path, "is truncated or not a checkpoint: download it again.")) as err:
            reader(path)
    _assert_clean(err)
    assert "central directory" in caplog.text


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.0001])
@pytest.mark.parametrize("reader", [weights.read_state_dict, weights.read_key_shapes])
def test_truncated_safetensors_is_named_truncated(tmp_path, keep, reader):
    good = tmp_path / "good.safetensors"
    save_file(random_weights.lmk2video_state_dicts(0)["pose_guider"], str(good))
    path = _truncate(good, tmp_path / "pose_guider.safetensors", keep)
    with pytest.raises(CheckpointError, match=_exact(path, "is truncated or not a checkpoint: download it again.")) as err:
        reader(path)
    _assert_clean(err)


@pytest.mark.parametrize("content", [b"", b"<html><body>404 Not Found</body></html>", b"version https://git-lfs"])
def test_foreign_bytes_are_not_a_checkpoint(tmp_path, content):
    """An HTML error page or LFS pointer saved under the name: not "refused for your safety"."""
    path = tmp_path / "motion_module.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=_exact(path, "is truncated or not a checkpoint: download it again.")) as err:
        weights.read_state_dict(path)
    _assert_clean(err)


def test_legacy_format_truncated(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"a": torch.zeros(100)}, good, _use_new_zipfile_serialization=False)
    path = _truncate(good, tmp_path / "audio2pose.pt")
    with pytest.raises(CheckpointError, match=_exact(path, "is truncated or not a checkpoint: download it again.")) as err:
        weights.read_state_dict(path)
    _assert_clean(err)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "pose_guider.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(CheckpointError, match=_exact(path, "is truncated or not a checkpoint: download it again.")):
        weights.read_state_dict(path)


def test_audio2pose_file_picked_as_audio2mesh(tmp_path, caplog):
    path = tmp_path / "audio2mesh.pt"
    torch.save(random_weights.audio2pose_state_dict(1), path)
    with caplog.at_level(logging.WARNING, logger="aniportrait_lib.weights"):
        with pytest.raises(CheckpointError, match=_exact(
                path, "is another model's file: expected audio2mesh.pt (Audio2Mesh), found audio2pose.pt (Audio2Pose).")) as err:
            models.load_audio2mesh(weights.read_state_dict(path), path)
    _assert_clean(err)
    assert "look like audio2pose, not audio2mesh" in caplog.text  # the detail is logged


def test_audio2mesh_file_picked_as_audio2pose(tmp_path):
    path = tmp_path / "audio2pose.pt"
    torch.save(random_weights.audio2mesh_state_dict(0), path)
    with pytest.raises(CheckpointError, match=_exact(
            path, "is another model's file: expected audio2pose.pt (Audio2Pose), found audio2mesh.pt (Audio2Mesh).")):
        models.load_audio2pose(weights.read_state_dict(path), path)


@pytest.mark.parametrize("role,picked,loader", [
    ("pose_guider", "motion_module", lambda p, sds: loading.load_pose_guider(p)),
    ("reference_unet", "denoising_unet", lambda p, sds: loading.load_reference_unet(p)),
    ("denoising_unet", "reference_unet", lambda p, sds: loading.load_video_unet(p, sds["motion_module"])),
    ("motion_module", "pose_guider", lambda p, sds: loading.load_video_unet(sds["denoising_unet"], p)),
])
def test_stage2_file_of_another_model(tmp_path, role, picked, loader):
    sds = random_weights.lmk2video_state_dicts(0)
    path = tmp_path / loading.RELEASED_FILES[role]
    torch.save(sds[picked], path)
    want, got = weights.LAYOUT_NAMES[role], weights.LAYOUT_NAMES[picked]
    with pytest.raises(CheckpointError, match=_exact(path, f"is another model's file: expected {want}, found {got}.")):
        loader(path, sds)


def test_damaged_file_of_the_right_model_still_lists_keys(tmp_path):
    """Not another model's file: the message keeps naming the first offending keys."""
    sd = random_weights.audio2mesh_state_dict(0)
    sd.pop("in_fn.bias")
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\), first: in_fn.bias"):
        models.load_audio2mesh(sd, tmp_path / "audio2mesh.pt")


def test_identify_layout_of_small_models_and_others():
    sds = {"audio2mesh": random_weights.audio2mesh_state_dict(0), "audio2pose": random_weights.audio2pose_state_dict(1),
           **random_weights.lmk2video_state_dicts(0)}
    for name, sd in sds.items():
        assert weights.identify_layout(sd) == name
    assert weights.identify_layout({"model.diffusion_model.input_blocks.0.0.weight": 0}) == "sd_checkpoint"
    assert weights.identify_layout({"vision_model.embeddings.patch_embedding.weight": 0,
                                    "visual_projection.weight": 0}) == "clip_vision"
    assert weights.identify_layout({"encoder.down_blocks.0.resnets.0.conv1.weight": 0, "quant_conv.weight": 0,
                                    "decoder.up_blocks.0.resnets.0.conv1.weight": 0}) == "sd_vae"
    assert weights.identify_layout({"foo": 0}) is None
    assert weights.identify_layout({}) is None


def test_identify_layout_of_reference_manifests(reference_manifests):
    for name, layout in [("audio2mesh", "audio2mesh"), ("audio2pose", "audio2pose"),
                         ("reference_unet", "reference_unet"), ("denoising_unet", "denoising_unet"),
                         ("denoising_unet_without_motion_modules", "denoising_unet"),
                         ("motion_module", "motion_module"), ("pose_guider", "pose_guider")]:
        assert weights.identify_layout(reference_manifests(name)) == layout, name


@pytest.fixture
def reference_manifests():
    from support.golden import manifest

    return manifest  # the reference's key -> shape manifests; absent reference = failure, as for the goldens


@pytest.mark.parametrize("loader, wrong", [
    ("reference_unet", "pose_guider"), ("denoising_unet", "audio2mesh"), ("pose_guider", "reference_unet"),
])
def test_stage2_loaders_name_the_other_model_before_building_from_its_shapes(tmp_path, loader, wrong):
    from support import random_weights
    from aniportrait_lib.networks import loading

    files = random_weights.save_lmk2video_models(tmp_path / "lmk", seed=0)
    random_weights.save_audio_models(tmp_path / "audio")
    given = dict(files)
    given[loader] = files.get(wrong) or tmp_path / "audio" / f"{wrong}.pt"
    expected = weights.LAYOUT_NAMES[loader].replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(weights.CheckpointError, match=f"is another model's file: expected {expected}, found "):
        loading.load_lmk2video_models(given)


# ----------------------------------------------------------------------------- legacy pickles, torch's advice
#: torch's advice to switch the safety check off; it must reach neither a message nor the log
UNSAFE_ADVICE = ("weights_only` set to `False", "weights_only=False", "trusted source", "trust the source",
                 "safe_globals", "allowlist", "can still be loaded")


class RunsCode:
    """A pickle that would run a shell command if it were ever loaded unsafely."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _legacy_pickle(path, marker, how: str):
    """A non-zip pickle holding code: pickle.dump in protocol 0/2/4/5, or torch's legacy format (protocol 2 and 4)."""
    import pickle

    payload = {"in_fn.weight": torch.zeros(2, 2), "extra": RunsCode(marker)}
    if how.startswith("pickle"):
        with open(path, "wb") as f:
            pickle.dump({"extra": RunsCode(marker)}, f, protocol=int(how[-1]))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=False, pickle_protocol=int(how[-1]))
    return path


@pytest.mark.parametrize("how", ["pickle0", "pickle2", "pickle4", "pickle5", "torch_legacy2", "torch_legacy4"])
@pytest.mark.parametrize("reader", [weights.read_state_dict, weights.read_key_shapes])
def test_legacy_pickle_with_code_is_refused_for_safety(tmp_path, caplog, reader, how):
    marker = tmp_path / "ran"
    path = _legacy_pickle(tmp_path / "audio2mesh.pt", marker, how)
    with caplog.at_level(logging.WARNING, logger="aniportrait_lib.weights"):
        with pytest.raises(CheckpointError, match=_exact(path, "contains code or objects and was refused for your safety.")) as err:
            reader(path)
    _assert_clean(err)
    assert not marker.exists()  # never run
    for advice in UNSAFE_ADVICE:
        assert advice not in caplog.text, f"{advice!r} reached the log: {caplog.text}"


def test_zip_pickle_in_protocol_4_with_code_is_refused_for_safety(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "pose_guider.pth"
    torch.save({"a": torch.zeros(2), "extra": RunsCode(marker)}, path, pickle_protocol=4)
    with pytest.raises(CheckpointError, match=_exact(path, "contains code or objects and was refused for your safety.")):
        weights.read_state_dict(path)
    assert not marker.exists()


def test_legacy_checkpoint_in_protocol_4_is_not_called_unsafe(tmp_path):
    """Tensors alone, in a pickle protocol torch's safe reader does not know: not code, so not "refused"."""
    path = tmp_path / "audio2pose.pt"
    torch.save({"a": torch.zeros(3, dtype=torch.float16)}, path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    with pytest.raises(CheckpointError, match=_exact(path, "is truncated or not a checkpoint: download it again.")):
        weights.read_state_dict(path)


@pytest.mark.parametrize("make", [
    lambda p: torch.save({"w": torch.zeros(2), "extra": Custom()}, p),
    lambda p: torch.save({"w": torch.zeros(2), "extra": Custom()}, p, _use_new_zipfile_serialization=False),
    lambda p: p.write_bytes(b"<html>not a model</html>"),
])
def test_torchs_advice_to_load_unsafely_never_reaches_the_log(tmp_path, caplog, make):
    """torch's text says that re-running with weights_only=False "will likely succeed": the log keeps the reason only."""
    path = tmp_path / "motion_module.pth"
    make(path)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(CheckpointError):
            weights.read_state_dict(path)
    assert "reading checkpoint" in caplog.text
    for advice in UNSAFE_ADVICE:
        assert advice not in caplog.text, f"{advice!r} reached the log: {caplog.text}"


def test_torchs_pickle_protocol_warning_is_not_passed_on(tmp_path):
    """torch warns about a protocol it did not write and asks to file an issue: no use to a user."""
    import warnings

    path = _legacy_pickle(tmp_path / "audio2mesh.pt", tmp_path / "ran", "torch_legacy4")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError):
            weights.read_state_dict(path)
    assert [str(w.message) for w in caught] == []
