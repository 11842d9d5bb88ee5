"""One model evaluation (:class:`~aniportrait_lib.sampling.evaluation.Lmk2VideoModel`): rows are independent, windows
can share a call, the reference runs once per sampling run. The tiny networks of the golden ``pipeline`` case."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aniportrait_lib.sampling.evaluation import Lmk2VideoModel, ModelCall
from aniportrait_lib.sampling.pose_source import as_pose_frames

#: a row evaluated alone or beside others differs only by the float order of batched kernels (measured: 0 on this
#: CPU's fp32 kernels, up to ~1e-6 of the output range elsewhere)
BATCH_ORDER_TOLERANCE = 1e-5
FRAMES = 24


@pytest.fixture(scope="module")
def inputs(pipeline_case: tuple[Path, dict]) -> dict[str, Any]:
    """Noisy latents of a 24-frame clip, its pose frames, a reference latent and a CLIP context (case size)."""
    folder, case = pipeline_case
    p = case["params"]
    h, w = int(p["height"]) // 8, int(p["width"]) // 8
    gen = torch.Generator().manual_seed(3)
    base = np.load(folder / "in_pose_images_uint8.npy")
    poses = np.concatenate([base, base[::-1]] * FRAMES)[:FRAMES]
    return dict(x=torch.randn(1, 4, FRAMES, h, w, generator=gen), reference=torch.randn(1, 4, h, w, generator=gen),
                context=torch.randn(1, 1, int(p["cross_dim"]), generator=gen), poses=as_pose_frames(poses))


def _call(inputs: dict, rows: list[tuple[str, list[int]]], t: float = 500.0) -> ModelCall:
    """A call with one row per (branch, window): branch "pos" reads the reference with the context, "neg" has a zero
    context and no reference (the original's unconditional branch)."""
    x = torch.cat([inputs["x"][:, :, window] for _, window in rows])
    context = torch.cat([inputs["context"] if b == "pos" else torch.zeros_like(inputs["context"]) for b, _ in rows])
    return ModelCall(x=x, timestep=torch.full((len(rows),), t), context=context,
                     reference_latent=inputs["reference"].expand(len(rows), -1, -1, -1),
                     use_reference=torch.tensor([float(b == "pos") for b, _ in rows]), poses=inputs["poses"],
                     frames=[window for _, window in rows])


def _model(tiny_models: Any) -> Lmk2VideoModel:
    return Lmk2VideoModel(tiny_models.reference_unet, tiny_models.video_unet, tiny_models.pose_guider)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) <= BATCH_ORDER_TOLERANCE * float(b.abs().max())


def test_a_row_alone_gives_its_result_in_a_call_with_both_rows(tiny_models: Any, inputs: dict) -> None:
    """Newer cores' multi-GPU CFG split evaluates the positive and negative rows on different devices: each row
    alone must give what it gives beside the other."""
    model = _model(tiny_models)
    window = list(range(16))
    with model.sampling_run():
        both = model.predict(_call(inputs, [("neg", window), ("pos", window)]))
    with model.sampling_run():
        pos = model.predict(_call(inputs, [("pos", window)]))
    with model.sampling_run():
        neg = model.predict(_call(inputs, [("neg", window)]))
    assert _close(pos[0], both[1]) and _close(neg[0], both[0])
    assert float((both[0] - both[1]).abs().max()) > 1e-3, "the branches differ (reference and context reach the net)"


def test_several_windows_in_one_call_give_each_window_its_own_result(tiny_models: Any, inputs: dict) -> None:
    """Rows of different windows (a wrap-around one included) read their own pose frames in one call."""
    model = _model(tiny_models)
    first, wrapped = list(range(16)), [20, 21, 22, 23] + list(range(12))
    with model.sampling_run():
        together = model.predict(_call(inputs, [("neg", first), ("neg", wrapped), ("pos", first), ("pos", wrapped)]))
        alone = [model.predict(_call(inputs, [(b, w)]))[0] for b in ("neg", "pos") for w in (first, wrapped)]
    for row, expected in zip(together, alone):
        assert _close(row, expected)
    assert float((together[2] - together[3]).abs().max()) > 1e-3, "the windows' pose frames differ"


def test_the_reference_runs_once_per_sampling_run_and_is_forgotten_after(tiny_models: Any, inputs: dict) -> None:
    model = _model(tiny_models)
    window = list(range(16))
    with model.sampling_run():
        for t in (900.0, 500.0, 100.0):
            model.predict(_call(inputs, [("neg", window), ("pos", window)], t))
        assert model.reference_runs == 1
    assert model._references == [] and model._pose_caches == {}
    with model.sampling_run():
        model.predict(_call(inputs, [("neg", window)]))  # no row reads the reference: it is not run
    assert model.reference_runs == 1


def test_a_window_past_the_pose_frames_is_refused(tiny_models: Any, inputs: dict) -> None:
    model = _model(tiny_models)
    call = _call(inputs, [("pos", list(range(16)))])
    call.frames = [list(range(10, 26))]
    with pytest.raises(ValueError, match="the context window reaches frame 25 but the pose input has 24 frames"):
        model.predict(call)
