"""AniPortrait Decode To Video in-process: a real core VAE (random weights), a core AUDIO, chunked decoding."""
from __future__ import annotations

import os

import pytest
import torch

FRAMES, LAT = 20, 8  # 20 frames of 64x64


@pytest.fixture(scope="module")
def vae(pack):
    import comfy.sd
    import comfy.utils

    from support import random_weights

    path = random_weights.save_sd_vae(pack.work_dir / "models" / "video-out-vae.safetensors")
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))


@pytest.fixture(scope="module")
def latents():
    return torch.randn(FRAMES, 4, LAT, LAT, generator=torch.Generator().manual_seed(0))


def _audio(seconds=1.0, rate=22050, channels=1):
    n = int(seconds * rate)
    t = torch.arange(n) / rate
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * t).repeat(1, channels, 1)
    return {"waveform": wave, "sample_rate": rate}


class _CountingVAE:
    """The core VAE with its decode batch sizes recorded."""

    def __init__(self, vae):
        self._vae, self.batches = vae, []

    def __getattr__(self, name):
        return getattr(self._vae, name)

    def decode(self, samples):
        self.batches.append(int(samples.shape[0]))
        return self._vae.decode(samples)


def _run(pack, vae, latents, **kw):
    args = dict(samples={"samples": latents}, vae=vae, fps=30.0, chunk_frames=8, quality="lossless", crf=19,
                audio=_audio())
    args.update(kw)
    return pack.nodes.video_out.DecodeToVideo.execute(**args)


def test_lossless_video_matches_whole_batch_decode_in_chunks(pack, vae, latents) -> None:
    counting = _CountingVAE(vae)
    out = _run(pack, counting, latents)
    assert counting.batches == [8, 8, 4], counting.batches  # never more than a chunk of float pixels
    video = out.args[0]
    comps = video.get_components()
    assert tuple(comps.images.shape) == (FRAMES, 64, 64, 3)
    assert float(comps.frame_rate) == 30.0
    assert comps.audio is not None and comps.audio["waveform"].shape[-1] > 0
    whole = vae.decode(latents)  # core VAE.decode of the whole batch
    err = (comps.images.float() - whole.float()).abs().max().item()
    assert err <= 0.5 / 255 + 1e-4, err  # lossless: only the uint8 rounding
    assert "H.264 RGB lossless" in out.ui.as_dict()["text"][0]
    assert os.path.dirname(video.get_stream_source()) == pack_temp_dir()


def pack_temp_dir() -> str:
    import folder_paths

    return folder_paths.get_temp_directory()


def test_h264_video_has_the_latents_frame_count_size_and_audio(pack, vae, latents) -> None:
    import av

    out = _run(pack, vae, latents[:5], quality="h264", chunk_frames=0, audio=_audio(2.0, 44100, 2))
    video = out.args[0]
    path = video.get_stream_source()
    with av.open(path) as container:
        v = container.streams.video[0]
        assert v.codec.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(v)) == 5
        assert len(container.streams.audio) == 1 and container.streams.audio[0].codec.name == "aac"
    assert video.get_dimensions() == (64, 64)
    # audio cut to the video's length (5 frames at 30 fps), like core Create Video
    assert abs(video.get_duration() - 5 / 30) < 0.05
    text = out.ui.as_dict()["text"][0]
    assert "5 frames 64x64" in text and "with audio" in text and "libx264" in text


def test_core_save_video_copies_the_file(pack, vae, latents) -> None:
    import av
    from comfy_extras.nodes_video import SaveVideo

    video = _run(pack, vae, latents[:4], quality="h264", audio=None).args[0]
    with av.open(video.get_stream_source()) as c:
        assert len(c.streams.audio) == 0
    target = pack.work_dir / "output" / "saved.mp4"
    video.save_to(str(target), format="mp4", codec="h264")
    with av.open(str(target)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 4
    assert SaveVideo.define_schema().inputs[0].io_type == "VIDEO"


def test_cancel_removes_the_temp_file(pack, vae, latents, monkeypatch) -> None:
    import comfy.model_management as mm

    before = set(os.listdir(pack_temp_dir())) if os.path.isdir(pack_temp_dir()) else set()
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) > 2:
            raise mm.InterruptProcessingException()

    monkeypatch.setattr(mm, "throw_exception_if_processing_interrupted", interrupt)
    with pytest.raises(mm.InterruptProcessingException):
        _run(pack, vae, latents, chunk_frames=4)
    assert set(os.listdir(pack_temp_dir())) == before


def test_a_video_latent_decodes_like_its_frames(pack, vae, latents) -> None:
    """KSampler's video latent (1, 4, F, h, w) from the AniPortrait MODEL gives the same video as its F frames."""
    frames = latents[:4]
    as_video = frames.permute(1, 0, 2, 3)[None].contiguous()
    video = _run(pack, vae, as_video).args[0].get_components().images
    assert torch.equal(video, _run(pack, vae, frames).args[0].get_components().images)


def test_a_batch_of_video_latents_is_refused(pack, vae) -> None:
    with pytest.raises(ValueError, match=r"this node takes one video latent \(1, 4, frames, h, w\) as AniPortrait "
                                         r"Sampler and KSampler output with the AniPortrait MODEL"):
        _run(pack, vae, torch.zeros(2, 4, 3, 8, 8))


def test_decode_frames_gives_the_frames_of_the_video(pack, vae, latents) -> None:
    """Decode Frames: the video latent (1, 4, F, h, w) to F images, chunk by chunk, the same pixels as decoding
    every frame at once with core's VAE (the lossless mp4 of Decode To Video holds the same frames)."""
    frames = latents[:5]
    as_video = frames.permute(1, 0, 2, 3)[None].contiguous()
    images = pack.nodes.video_out.DecodeFrames.execute({"samples": as_video}, vae, 2).args[0]
    assert tuple(images.shape) == (5, frames.shape[2] * 8, frames.shape[3] * 8, 3)
    assert torch.allclose(images, vae.decode(frames), atol=1e-6)


# ----------------------------------------------------------------------------- pre-flight through the nodes


def test_render_pose_images_refuses_when_memory_is_short(pack, monkeypatch) -> None:
    import numpy as np

    from aniportrait_lib.data import Landmarks

    landmarks = Landmarks(points=np.full((300, 478, 2), 30.0), width=512, height=512)
    monkeypatch.setattr(pack.nodes.comfy_adapter, "free_ram_bytes", lambda: int(1.0e9))
    with pytest.raises(ValueError) as exc:
        pack.nodes.motion.RenderPoseImages.execute(landmarks)
    from aniportrait_lib import preflight

    assert str(exc.value) == ("Render Pose Images (300 frames at 512x512) needs about 1.2 GB of RAM but 1.0 GB are free; "
                              + preflight.POSE_IMAGES_ADVICE)
    assert str(exc.value).startswith("Render Pose Images (300 frames at 512x512) needs about 1.2 GB of RAM but 1.0 GB are free; render fewer frames")


def test_render_pose_images_small_run_passes(pack) -> None:
    import numpy as np

    from aniportrait_lib.data import Landmarks

    out = pack.nodes.motion.RenderPoseImages.execute(Landmarks(points=np.full((2, 478, 2), 30.0), width=64, height=64))
    assert tuple(out.args[0].shape) == (2, 64, 64, 3)


def test_check_memory_refuses_audio2mesh_with_a_small_free_value(pack, monkeypatch) -> None:
    monkeypatch.setattr(pack.nodes.comfy_adapter, "free_ram_bytes", lambda: int(0.1e9))
    with pytest.raises(ValueError, match=r"^Audio2Mesh \(120 s of audio\) needs about \d+\.\d GB of RAM but 0\.1 GB are free; use shorter audio"):
        pack.nodes.comfy_adapter.check_memory("audio2mesh", seconds=120.0)
    pack.nodes.comfy_adapter.check_memory("audio2mesh", seconds=1.0)


def _source_video(pack, frames: int, fps: int, size=(96, 80)) -> str:
    """A lossless numbered VIDEO file: frame i is grey level 5 * i."""
    import numpy as np

    from aniportrait_lib.media import encode

    path = str(pack.work_dir / f"paste_source_{frames}_{fps}.mp4")
    with encode.VideoWriter(path, *size, fps, encode.pick_codec("lossless")) as writer:
        writer.write(np.stack([np.full((size[1], size[0], 3), 5 * i, np.uint8) for i in range(frames)]))
    return path


def test_paste_back_to_video_writes_the_source_at_its_own_rate(pack, vae, latents) -> None:
    """KSampler's latent layout (1, 4, F, h, w) pasted into a 25 fps VIDEO aligned to 30 fps speech: the output has
    the source's 25 fps, each source frame once in order (its grey level outside the window), and the audio."""
    import av
    import numpy as np
    from comfy_api.latest import InputImpl

    from aniportrait_lib.data import CropInfo

    nodes = pack.nodes
    source = InputImpl.VideoFromFile(_source_video(pack, 20, 25))
    audio = _audio(24 / 30)  # 24 frames at 30 fps = 20 at 25
    aligned, aligned_audio, _ = nodes.dubbing.AlignVideoToAudio.execute(source, 25.0, audio, "trim", 30.0).result
    assert aligned.num_frames == 24
    info = CropInfo(np.tile([20.0, 10.0, 60.0, 50.0], (24, 1)), (96, 80), (64, 64))
    samples = {"samples": torch.randn(1, 4, 24, LAT, LAT, generator=torch.Generator().manual_seed(1))}  # KSampler's layout
    out = nodes.paste_video.PasteBackToVideo.execute(samples, vae, info, aligned, 30.0, "box", 0.15, 0.05, False, 8,
                                                     "lossless", 0, aligned_audio)
    path = out.args[0].get_stream_source()
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == 25.0 and len(container.streams.audio) == 1
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 20
    corner = [int(f[0, 0, 0]) for f in frames]  # outside the window: the source frame itself
    assert corner == [5 * i for i in range(20)]
    assert "20 frames 96x80 at 25 fps from 24 generated frames, with audio" in out.ui.as_dict()["text"][0]


def test_paste_back_to_video_says_what_to_connect(pack, vae, latents) -> None:
    import numpy as np

    from aniportrait_lib.data import CropInfo

    photo = torch.zeros(1, 80, 96, 3)
    info = CropInfo(np.array([[0.0, 0.0, 50.0, 50.0]]), (128, 128), (64, 64))
    with pytest.raises(ValueError, match=r"^the original is 96x80 but the crop info was made from 128x128 frames; "
                                         r"connect the photo or video that went into AniPortrait Face Crop$"):
        pack.nodes.paste_video.PasteBackToVideo.execute({"samples": latents[:3]}, vae, info, photo, 30.0, "box", 0.15,
                                                        0.05, False, 8, "h264", 19)
