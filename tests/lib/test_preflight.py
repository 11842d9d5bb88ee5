"""Pre-flight memory estimates: close to measured allocations, exact refusal messages, small runs pass."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from aniportrait_lib import preflight
from aniportrait_lib.audio import inference
from support.paths import REPO_ROOT


def test_check_refuses_with_the_estimate_and_advice() -> None:
    with pytest.raises(ValueError) as exc:
        preflight.check(56.6e9, 20.0e9, "AniPortrait Sampler (18000 frames at 512x512)", "use fewer frames.")
    assert str(exc.value) == ("AniPortrait Sampler (18000 frames at 512x512) needs about 56.6 GB of RAM but "
                              "20.0 GB are free; use fewer frames.")
    preflight.check(1e9, 2e9, "x", "y")  # fits
    preflight.check(1e12, None, "x", "y")  # unknown free memory: never refuses


def test_vram_message_names_vram() -> None:
    with pytest.raises(ValueError, match=r"needs about 9\.0 GB of VRAM but 8\.0 GB are free"):
        preflight.check(9e9, 8e9, "x", "y", memory="VRAM")


def test_pose_images_estimate_matches_the_arrays_rendered() -> None:
    from aniportrait_lib.face import renderer
    from aniportrait_lib import imaging

    frames, w, h = 6, 96, 64
    points = np.random.default_rng(0).uniform(10, 50, (frames, 478, 2))
    drawn = renderer.draw_pose_images(points, w, h)
    image = imaging.uint8_to_float(drawn, torch.device("cpu"))
    measured = drawn.nbytes + image.numel() * image.element_size()
    assert preflight.pose_images_bytes(frames, w, h) == measured


def test_wav2vec_estimate_within_a_factor_of_measured_peak() -> None:
    """Peak RSS of one base-size wav2vec2 pass over 20 s of audio (fresh process) vs the estimate."""
    code = textwrap.dedent("""
        import torch
        from aniportrait_lib.audio import wav2vec

        def status(key):  # kB lines of /proc/self/status
            return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

        torch.set_num_threads(2)
        enc = wav2vec.build_encoder(wav2vec.make_config()).eval()
        x = torch.randn(1, 16000 * 20)
        with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS: only the pass counts
            f.write("5")
        base = status("VmRSS:")
        with torch.inference_mode():
            enc(x)
        print(status("VmHWM:") - base)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = int(out.stdout.strip().splitlines()[-1])
    estimate = preflight.wav2vec_bytes(20)
    print(f"[preflight] wav2vec2 20 s: measured {measured / 1e9:.2f} GB, estimate {estimate / 1e9:.2f} GB")
    assert measured / 2 <= estimate <= measured * 2


def test_ten_minutes_at_512_is_refused_on_a_24_gb_machine() -> None:
    """The issue's case: 10 minutes at 512x512 (18000 frames), on the CPU and on a GPU host with 24 GB RAM."""
    for on_gpu in (False, True):
        need = preflight.estimate("sampler", on_gpu, frames=18000, width=512, height=512, cfg=3.5, context_frames=16,
                                  dtype=torch.float16)
        assert need.ram > 24e9
        with pytest.raises(ValueError, match="needs about .* GB of RAM but 24.0 GB are free; use fewer frames"):
            preflight.check(need.ram, 24e9, need.what, need.advice)


def test_ten_minutes_of_audio_fit_because_long_clips_are_encoded_in_windows() -> None:
    """Audio2Mesh encodes a clip over WHOLE_CLIP_SECONDS in wav2vec2 windows, so 600 s needs one window's
    attention (~1 GB), where one pass over the whole clip (the original's way) needs ~45 GB."""
    windowed = preflight.estimate("audio2mesh", False, seconds=600)
    whole = preflight.estimate("audio2mesh", False, seconds=600, whole_clip_seconds=None)
    assert "600 s of audio" in windowed.what
    assert windowed.ram < 4e9 < 24e9 < whole.ram
    preflight.check(windowed.ram, 24e9, windowed.what, windowed.advice)
    with pytest.raises(ValueError, match=r"^Audio2Mesh \(600 s of audio\) needs about .* GB of RAM but 24\.0 GB are free"):
        preflight.check(whole.ram, 24e9, whole.what, whole.advice)
    short = inference.WHOLE_CLIP_SECONDS  # up to this long a clip is one pass, whatever the setting
    assert (preflight.estimate("audio2mesh", False, seconds=short).ram
            == preflight.estimate("audio2mesh", False, seconds=short, whole_clip_seconds=None).ram)


def test_small_runs_fit() -> None:
    for step, sizes in [("pose_images", dict(frames=90, width=512, height=512)),
                        ("sampler", dict(frames=90, width=256, height=256)),
                        ("audio2mesh", dict(seconds=3.0)),
                        ("vae_decode", dict(frames=90, width=512, height=512))]:
        need = preflight.estimate(step, False, **sizes)
        assert need.ram < 4e9, (step, need.ram)


def test_paste_back_estimate_covers_what_paste_back_allocates() -> None:
    """The IMAGE path's estimate against the arrays a real paste-back run makes (frames, masks, their float IMAGE and
    MASK, the originals and the float generated crops)."""
    from aniportrait_lib import compose, imaging
    from aniportrait_lib.data import CropInfo

    frames, w, h, crop = 4, 160, 120, 64
    originals = np.random.default_rng(0).integers(0, 255, (frames, h, w, 3), dtype=np.uint8)
    generated = np.random.default_rng(1).uniform(0, 255, (frames, crop, crop, 3)).astype(np.float32)
    info = CropInfo(np.tile([40.0, 20.0, 120.0, 100.0], (frames, 1)), (w, h), (crop, crop))
    out, masks = compose.paste_frames(generated, originals, info)
    image, mask = imaging.uint8_to_float(out), imaging.uint8_to_float(masks)
    measured = (out.nbytes + masks.nbytes + image.numel() * 4 + mask.numel() * 4 + originals.nbytes + generated.nbytes)
    assert preflight.paste_back_bytes(frames, w, h, frames, crop, crop) == measured


def test_a_long_1080p_video_is_refused_as_image_and_fits_when_streamed() -> None:
    """Ten minutes of 1080p dubbing at 30 fps cannot be pasted back as IMAGE on a 24 GB machine; Paste Back To
    Video needs one chunk of frames, the same whatever the length."""
    image = preflight.estimate("paste_back", False, frames=18000, width=1920, height=1080, originals=18000,
                               crop_size=(512, 512))
    with pytest.raises(ValueError, match=r"^Paste Back \(18000 frames at 1920x1080\) needs about 9\d\d\.\d GB of RAM "
                                         r"but 24\.0 GB are free; use AniPortrait Paste Back To Video"):
        preflight.check(image.ram, 24e9, image.what, image.advice)
    streamed = preflight.estimate("paste_video", False, chunk_frames=16, width=1920, height=1080)
    assert streamed.ram < 0.5e9
    preflight.check(streamed.ram, 24e9, streamed.what, streamed.advice)
    crop = preflight.estimate("face_crop", False, frames=18000, width=1920, height=1080, crop_size=(512, 512))
    with pytest.raises(ValueError, match=r"^Face Crop of 18000 images at 1920x1080 needs about .* GB of RAM but 24\.0 "
                                         r"GB are free; connect the video itself"):
        preflight.check(crop.ram, 24e9, crop.what, crop.advice)
    short = preflight.estimate("paste_back", False, frames=300, width=1920, height=1080, originals=300,
                               crop_size=(512, 512))
    assert short.ram < 24e9  # 10 s still fits as IMAGE: only what cannot fit is refused
