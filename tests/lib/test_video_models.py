"""Stage-2 models (PoseGuider, ReferenceUNet, VideoUNet) against the original's goldens and release manifests.

Every size, input and tolerance comes from the case folders (``golden/pose_guider``, ``golden/unet_step``,
``golden/pipeline``) and ``manifests/``, so the same tests run on any instance of those cases.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from aniportrait_lib.networks.loading import (
    Lmk2VideoConfig,
    PoseGuiderConfig,
    load_lmk2video_models,
    load_pose_guider,
    load_reference_unet,
    load_video_unet,
)
from aniportrait_lib.networks.pose_guider import build_pose_guider
from aniportrait_lib.sampling.preprocess import prepare_pose_tensor as pose_images_to_input
from aniportrait_lib.networks.unet import build_reference_unet, build_video_unet, is_motion_key
from aniportrait_lib.weights import CheckpointError
from support.golden import load_case, manifest
from support.golden import max_abs_err as max_err
from support.golden import tolerance as abs_tol
from support.paths import reference_dir


def npy(folder: Path, name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(folder / name))


# ------------------------------------------------------------------------------------------------------------------
# PoseGuider
# ------------------------------------------------------------------------------------------------------------------
def _pose_guider_from_case(batch_norm_mode: str = "batch_stats"):
    folder, case = load_case("pose_guider")
    p = case["params"]
    cfg = PoseGuiderConfig(noise_latent_channels=p["C"], attention_heads=p["heads"],
                           attention_head_dim=p["head_dim"], norm_groups=p["groups"])
    model = load_pose_guider(folder / "pose_guider.pth", cfg, batch_norm_mode=batch_norm_mode)
    return folder, case, model


def _expected_pose_shapes(batch: int, c: int, frames: int, h: int, w: int) -> list[tuple[int, ...]]:
    h0, w0 = h // 8, w // 8
    h1, w1 = math.ceil(h0 / 2), math.ceil(w0 / 2)
    h2, w2 = math.ceil(h1 / 2), math.ceil(w1 / 2)
    h3, w3 = math.ceil(h2 / 2), math.ceil(w2 / 2)
    return [(batch, c, frames, h0, w0), (batch, c, frames, h1, w1), (batch, 2 * c, frames, h2, w2),
            (batch, 4 * c, frames, h3, w3), (batch, 4 * c, frames, h3, w3)]


@pytest.mark.golden
def test_pose_guider_golden():
    folder, case, model = _pose_guider_from_case()
    p = case["params"]
    tol = abs_tol(case["tolerance"]["out_fea*"])
    x = npy(folder, "in_pose_cond.npy")
    # the input is the pipeline's 2*uint8-1 mapping of the frames, CFG-duplicated
    frames = torch.from_numpy(np.load(folder / "in_pose_frames_uint8.npy"))
    assert torch.equal(pose_images_to_input(frames).repeat(x.shape[0], 1, 1, 1, 1), x)
    ref_pose = npy(folder, "in_ref_pose.npy")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        out = model(x, ref_pose)
    assert len(out) == 5
    assert [tuple(o.shape) for o in out] == _expected_pose_shapes(x.shape[0], p["C"], p["F"], p["H"], p["W"])
    for i, o in enumerate(out):
        err = max_err(o, np.load(folder / f"out_fea{i}.npy"))
        print(f"pose_guider out_fea{i}: max abs err {err:.3g} (tol {tol})")
        assert err <= tol
    # batch statistics never touch the stored running stats
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed during the forward pass"
    # the reference pose has no effect (accepted and ignored)
    with torch.no_grad():
        out_noref = model(x)
    assert all(torch.equal(a, b) for a, b in zip(out, out_noref))


@pytest.mark.golden
def test_pose_guider_batch_stats_ignores_train_eval_and_running_stats():
    folder, _case, model = _pose_guider_from_case()
    x = npy(folder, "in_pose_cond.npy")
    with torch.no_grad():
        model.eval()
        out_eval = model(x)
        model.train()
        out_train = model(x)
        model.eval()
    assert all(torch.equal(a, b) for a, b in zip(out_eval, out_train))
    # running_stats mode uses the stored (deliberately random) statistics -> different numbers
    model.batch_norm_mode = "running_stats"
    with torch.no_grad():
        out_running = model(x)
    diff = max(max_err(a, b) for a, b in zip(out_eval, out_running))
    print(f"pose_guider batch_stats vs running_stats: max abs diff {diff:.3g}")
    assert diff > 1e-2
    with pytest.raises(ValueError, match="batch_norm_mode must be one of .*, got 'train'"):
        model.batch_norm_mode = "train"


@pytest.mark.golden
@pytest.mark.parametrize("height,width,batch,frames", [(64, 64, 2, 3), (72, 56, 2, 2), (64, 64, 1, 1)])
def test_pose_guider_small_sizes(height, width, batch, frames):
    """The original crashes at 64x64 (batch-1 BatchNorm of its useless reference path); ours runs at any multiple
    of 8 from 64 up, including a single frame whose deepest maps have one value per channel."""
    _folder, case, model = _pose_guider_from_case()
    c = case["params"]["C"]
    gen = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (frames, height, width, 3), generator=gen, dtype=torch.uint8)
    x = pose_images_to_input(u8).repeat(batch, 1, 1, 1, 1)
    with torch.no_grad():
        out = model(x, pose_images_to_input(u8[:1])[:, :, 0])
    assert [tuple(o.shape) for o in out] == _expected_pose_shapes(batch, c, frames, height, width)
    assert all(torch.isfinite(o).all() for o in out)


# ------------------------------------------------------------------------------------------------------------------
# UNets: one reference write + one denoiser read (unet_step)
# ------------------------------------------------------------------------------------------------------------------
def _unet_configs(folder: Path, case: dict) -> tuple[dict, dict]:
    base = json.loads((folder / "base_unet_config.json").read_text())
    motion = json.loads((folder / "unet_additional_kwargs.json").read_text())
    # the original hard-codes 32 groups for the motion module's GroupNorm; the case overrides it (params.groups)
    motion["motion_module_kwargs"]["norm_num_groups"] = case["params"]["groups"]
    return base, motion


@pytest.fixture(scope="module")
def unet_step():
    folder, case = load_case("unet_step")
    base, motion = _unet_configs(folder, case)
    ref = load_reference_unet(folder / "reference_unet.pth", base)
    video = load_video_unet(folder / "denoising_unet.pth", folder / "motion_module.pth", base, motion)
    return folder, case, base, ref, video


@pytest.mark.golden
def test_reference_unet_writer_banks(unet_step):
    folder, case, base, ref, video = unet_step
    tol = abs_tol(case["tolerance"]["writer_bank_fp32"])
    ehs = npy(folder, "in_encoder_hidden_states.npy")
    ref_latent = npy(folder, "in_ref_latent.npy")
    cfg_batch = ehs.shape[0]
    bank = torch.load(folder / "writer_bank_fp32.pth", map_location="cpu")
    names = ref.spatial_block_names()
    assert names == video.spatial_block_names()
    assert sorted(names) == sorted(bank)
    # the original pairs reader/writer blocks after a stable sort by width; check those are our same-named pairs
    for pair in case["reader_writer_pairs"]:
        assert pair["reader"] == pair["writer"] and pair["reader"] in names
        assert list(bank[pair["writer"]].shape) == pair["bank_shape_writer"]
    with torch.no_grad():
        feats32 = ref(ref_latent.repeat(cfg_batch, 1, 1, 1), ehs, 0, feature_dtype=None)
        # fp64 evaluation of the same network: free of this machine's fp32 rounding (the golden was produced on
        # another CPU; even diffusers' own UNet2DConditionModel lands ~1.2e-5 from it here on the tiny model,
        # whose 8-channel LayerNorms amplify last-bit differences)
        ref64 = load_reference_unet(folder / "reference_unet.pth", base, dtype=torch.float64)
        feats64 = ref64(ref_latent.repeat(cfg_batch, 1, 1, 1).double(), ehs.double(), 0, feature_dtype=None)
    err32 = max(max_err(f, bank[n]) for f, n in zip(feats32, names))
    err64 = max(max_err(f, bank[n]) for f, n in zip(feats64, names))
    noise32 = max(max_err(a, b) for a, b in zip(feats32, feats64))
    print(f"writer banks: fp64 max abs err {err64:.3g} (tol {tol}); fp32 max abs err {err32:.3g} "
          f"(own fp32 rounding {noise32:.3g})")
    assert err64 <= tol
    assert err32 <= tol + noise32
    # reader banks = writer banks cast to float16 (update()'s quirk); feature_dtype=float16 (default) does the same
    reader = torch.load(folder / "reader_bank_after_update.pth", map_location="cpu")
    with torch.no_grad():
        feats16 = ref(ref_latent.repeat(cfg_batch, 1, 1, 1), ehs, 0)
    for f16, f32, n in zip(feats16, feats32, names):
        assert reader[n].dtype == f16.dtype == torch.float16
        assert torch.equal(reader[n], bank[n].to(torch.float16)), n
        assert torch.equal(f16, f32.to(torch.float16)), n


@pytest.mark.golden
def test_video_unet_noise_pred(unet_step):
    folder, case, _base, ref, video = unet_step
    tol = abs_tol(case["tolerance"]["out_noise_pred"])
    ehs = npy(folder, "in_encoder_hidden_states.npy")
    ref_latent = npy(folder, "in_ref_latent.npy")
    x = npy(folder, "in_latent_model_input.npy")
    batch = x.shape[0]
    assert x.shape[2] == case["params"]["F"] and tuple(x.shape[3:]) == (case["params"]["h"], case["params"]["w"])
    pose = [npy(folder, f"in_pose_fea{i}.npy") for i in range(5)]
    t = torch.tensor(case["timestep"]["t"], dtype=torch.int64)
    # CFG: first half unconditional (zero context, no reference tokens), second half conditional
    mask = torch.tensor([False] * (batch // 2) + [True] * (batch - batch // 2))
    with torch.no_grad():
        feats = ref(ref_latent.repeat(ehs.shape[0], 1, 1, 1), ehs, 0)  # fp16, like the original's banks
        out = video(x, t, ehs[:batch], pose, feats, mask)
        out_nocast = video(x, t, ehs[:batch], pose, [f.float() for f in ref(ref_latent.repeat(ehs.shape[0], 1, 1, 1),
                                                                                ehs, 0, feature_dtype=None)], mask)
    expected = np.load(folder / "out_noise_pred.npy")
    err = max_err(out, expected)
    print(f"unet_step out_noise_pred: max abs err {err:.3g} (tol {tol}); "
          f"without the fp16 bank cast {max_err(out_nocast, expected):.3g}")
    assert err <= tol
    # the mask is per sample, not per position: [cond, uncond] order gives the same rows
    flip = torch.arange(batch - 1, -1, -1)
    with torch.no_grad():
        out_flip = video(x[flip], t, ehs[:batch][flip], [p[flip] for p in pose], [f[flip] for f in feats], mask[flip])
    err_f = max_err(out_flip[flip], expected)
    print(f"unet_step with the CFG halves swapped: max abs err {err_f:.3g}")
    assert err_f <= tol
    # the uncond half must not see the reference: same result with no reference at all
    with torch.no_grad():
        out_uncond = video(x[: batch // 2], t, ehs[: batch // 2], [p[: batch // 2] for p in pose], None, None)
    err_u = max_err(out_uncond, expected[: batch // 2])
    print(f"unet_step uncond half without reference features: max abs err {err_u:.3g}")
    assert err_u <= tol
    # the cond half alone, with batch-1 reference features broadcast to it
    with torch.no_grad():
        out_cond = video(x[batch // 2:], t, ehs[batch // 2: batch], [p[batch // 2:] for p in pose],
                         [f[-1:] for f in feats], None)
    err_c = max_err(out_cond, expected[batch // 2:])
    print(f"unet_step cond half with broadcast reference features: max abs err {err_c:.3g}")
    assert err_c <= tol


# ------------------------------------------------------------------------------------------------------------------
# release manifests (meta device, full size)
# ------------------------------------------------------------------------------------------------------------------
def _compare_manifest(name: str, state: dict[str, torch.Tensor], summary: dict) -> None:
    expected = manifest(name)
    found = {k: list(v.shape) for k, v in state.items()}
    assert list(found) == list(expected), f"{name}: key list/order differs"
    bad = [k for k in expected if expected[k] != found[k]]
    assert not bad, f"{name}: wrong shapes, first {bad[:3]}"
    assert len(found) == summary[name]["num_keys"]
    assert sum(v.numel() for v in state.values()) == summary[name]["num_elements"]


def _module_prefixes(keys, last: str) -> list[str]:
    """Sorted distinct key prefixes ending in the ``last`` pattern (e.g. every ``...motion_modules.N``)."""
    return sorted({m.group(1) for k in keys if (m := re.match(rf"(.*?{last})\.", k))})


def test_meta_models_match_release_manifests():
    summary = json.loads((reference_dir() / "manifests" / "summary.json").read_text())
    ref = build_reference_unet(device="meta")
    assert ref.conv_out is None and ref.conv_norm_out is None
    _compare_manifest("reference_unet", ref.state_dict(), summary)
    # one reference-attention block per transformer block of the released ReferenceNet
    assert sorted(ref.spatial_block_names()) == _module_prefixes(manifest("reference_unet"), r"transformer_blocks\.\d+")
    video = build_video_unet(device="meta")
    state = video.state_dict()
    _compare_manifest("denoising_unet", state, summary)
    _compare_manifest("denoising_unet_without_motion_modules",
                      {k: v for k, v in state.items() if not is_motion_key(k)}, summary)
    _compare_manifest("motion_module", {k: v for k, v in state.items() if is_motion_key(k)}, summary)
    ours = sorted(n for n, _ in video.named_modules() if re.search(r"motion_modules\.\d+$", n))
    assert ours == _module_prefixes(manifest("motion_module"), r"motion_modules\.\d+")
    assert video.spatial_block_names() == ref.spatial_block_names()
    pose = build_pose_guider(device="meta")
    assert next(iter(pose.state_dict())) == "scale"
    _compare_manifest("pose_guider", pose.state_dict(), summary)


# ------------------------------------------------------------------------------------------------------------------
# strict loading
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.golden
def test_strict_loading_errors_name_file_and_key(tmp_path):
    folder, case = load_case("pose_guider")
    p = case["params"]
    cfg = PoseGuiderConfig(p["C"], p["heads"], p["head_dim"], p["groups"])
    sd = torch.load(folder / "pose_guider.pth", map_location="cpu")
    bad = dict(sd)
    shape = list(bad["cross_attn1.proj_out.bias"].shape)
    bad["cross_attn1.proj_out.bias"] = torch.zeros(shape[0] + 1)
    del bad["conv_layers.0.bias"]
    path = tmp_path / "pose_guider.pth"
    torch.save(bad, path)
    with pytest.raises(CheckpointError) as info:
        load_pose_guider(path, cfg)
    msg = str(info.value)
    print("error:", msg)
    assert "'pose_guider.pth'" in msg and str(tmp_path) in msg
    assert f"cross_attn1.proj_out.bias: expected {shape}, found {[shape[0] + 1]}" in msg
    assert "conv_layers.0.bias" in msg

    # the denoiser: each of its two files is checked against its own part
    ufolder, ucase = load_case("unet_step")
    base, motion = _unet_configs(ufolder, ucase)
    mm = torch.load(ufolder / "motion_module.pth", map_location="cpu")
    dropped = next(iter(mm))
    del mm[dropped]
    mm_path = tmp_path / "motion_module.pth"
    torch.save(mm, mm_path)
    with pytest.raises(CheckpointError) as info:
        load_video_unet(ufolder / "denoising_unet.pth", mm_path, base, motion)
    msg = str(info.value)
    assert "'motion_module.pth'" in msg and dropped in msg and "missing" in msg
    # motion keys inside denoising_unet.pth are unexpected there
    den = torch.load(ufolder / "denoising_unet.pth", map_location="cpu")
    den[dropped] = torch.zeros(1)
    den_path = tmp_path / "denoising_unet.pth"
    torch.save(den, den_path)
    with pytest.raises(CheckpointError) as info:
        load_video_unet(den_path, ufolder / "motion_module.pth", base, motion)
    msg = str(info.value)
    assert "'denoising_unet.pth'" in msg and dropped in msg and "unexpected" in msg


@pytest.mark.golden
def test_safetensors_and_all_four_files(tmp_path):
    """load_lmk2video_models on the pipeline case's four files (fp16-stored parameters), once from .pth and once
    from .safetensors copies; the pose features of the first window match the original's."""
    from safetensors.torch import save_file

    folder, case = load_case("pipeline")
    _pfolder, pcase = load_case("pose_guider")
    unet_cfg = json.loads((folder / "base_unet_config.json").read_text())
    motion = json.loads((folder / "unet_additional_kwargs.json").read_text())
    p = case["params"]
    motion["motion_module_kwargs"]["norm_num_groups"] = p["groups"]
    cfg = Lmk2VideoConfig(unet=unet_cfg, motion=motion,
                          pose_guider=PoseGuiderConfig(p["C"], p["pg_heads"], p["pg_head_dim"], p["groups"]))
    names = ("reference_unet", "denoising_unet", "motion_module", "pose_guider")
    paths = {n: folder / f"{n}.pth" for n in names}
    models = load_lmk2video_models(paths, cfg)
    st_paths = {}
    for n in names:
        sd = torch.load(paths[n], map_location="cpu")
        st_paths[n] = tmp_path / f"{n}.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(st_paths[n]))
    models_st = load_lmk2video_models(st_paths, cfg)
    for a, b in zip(models.video_unet.state_dict().values(), models_st.video_unet.state_dict().values()):
        assert torch.equal(a, b)
    # window 0 = first 16 frames (or all), CFG-duplicated, like the pipeline
    frames = torch.from_numpy(np.load(folder / "in_pose_images_uint8.npy"))
    expected0 = np.load(folder / "pose_fea_window0_0.npy")
    window = expected0.shape[2]
    x = pose_images_to_input(frames[:window]).repeat(expected0.shape[0], 1, 1, 1, 1)
    tol = abs_tol(pcase["tolerance"]["out_fea*"])
    with torch.no_grad():
        out = models_st.pose_guider(x)
    for i, o in enumerate(out):
        err = max_err(o, np.load(folder / f"pose_fea_window0_{i}.npy"))
        print(f"pipeline pose_fea_window0_{i}: max abs err {err:.3g} (tol {tol})")
        assert err <= tol
    # missing file role -> clear error
    with pytest.raises(CheckpointError, match="motion_module"):
        load_lmk2video_models({n: paths[n] for n in names if n != "motion_module"}, cfg)
