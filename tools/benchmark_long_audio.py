"""Long audio through a real ComfyUI server: peak RSS and time for 10 s vs 10 minutes of speech.

The workflow is the whole job at flat memory: stage 1 (full-size random Audio2Mesh/Audio2Pose), AniPortrait
Load Video Model and AniPortrait Video Conditioning fed by ``landmarks`` (pose frames drawn per window) into
AniPortrait Sampler with the small random models at 64x64, and AniPortrait Decode To Video (decoded chunk by
chunk into an mp4 with the audio) into core Save Video. The VAE is core's TAESD (random weights in
``models/vae_approx``) so that decoding 18,000 frames takes minutes on a CPU; the SD VAE works the same way,
only slower.

Each length runs on a fresh server; the server's RSS (with its children) is sampled every 0.5 s, and the
curve is written as CSV next to the printed table.

    python tools/benchmark_long_audio.py --seconds 10 600 [--steps 2] [--size 64] [--csv DIR]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

from support.comfy_server import execution_error, start_server, stop_server  # noqa: E402

TEXT = ("The quick brown fox jumps over the lazy dog while the portrait keeps talking about the weather, "
        "the news of the day and everything else that comes to mind. ")


def make_speech(path: Path, seconds: float) -> None:
    """``seconds`` of espeak-ng speech (one sentence repeated) as a 16-bit mono wav."""
    sentence = path.with_suffix(".sentence.wav")
    subprocess.run(["espeak-ng", "-w", str(sentence), TEXT], check=True, timeout=120)
    with wave.open(str(sentence)) as w:
        rate, samples = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    total = int(seconds * rate)
    speech = np.tile(samples, total // len(samples) + 1)[:total]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(speech.tobytes())


def save_models(models: Path) -> None:
    """Random weights in the release layouts (+ a random TAESD) under ``models``."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from support import random_weights

    comfy_root = Path.home() / ".cache" / "aniportrait-ci" / "ComfyUI"
    sys.path.insert(0, str(comfy_root))
    from comfy.cli_args import args

    args.cpu = True  # only to build the modules here; the server picks its own device
    from comfy.taesd import taesd  # core's TAESD definition: the layout VAELoader("taesd") reads

    aniportrait = models / "aniportrait"
    random_weights.save_audio_models(aniportrait, full_size=True)
    random_weights.save_lmk2video_models(aniportrait)
    shutil.copyfile(REPO.parent / "shared" / "assets" / "face_landmarker.task", aniportrait / "face_landmarker.task")
    (models / "clip_vision").mkdir(parents=True, exist_ok=True)
    random_weights.save_clip_vision_vitl(models / "clip_vision" / "clip.safetensors")
    (models / "vae_approx").mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for name, part in (("taesd_encoder", taesd.Encoder(4)), ("taesd_decoder", taesd.Decoder(4))):
        # core builds TAESD from comfy.ops layers that skip initialisation: without explicit values the file holds
        # whatever memory was there (NaN/inf at times, which made a 10-minute run fail after 2 hours)
        weights = {k: (torch.randn(v.shape, generator=gen) * (0.1 if k.endswith("bias") else 0.05)).to(v.dtype)
                   for k, v in part.state_dict().items()}
        save_file(weights, str(models / "vae_approx" / f"{name}.safetensors"))


def prompt(size: int, steps: int) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "portrait.png"}},
        "2": {"class_type": "LoadAudio", "inputs": {"audio": "speech.wav"}},
        "3": {"class_type": "AniPortraitLoadAudioModels", "inputs": {"audio2mesh_name": "audio2mesh.pt", "audio2pose_name": "audio2pose.pt"}},
        "4": {"class_type": "AniPortraitLoadFaceLandmarker", "inputs": {"model_name": "face_landmarker.task"}},
        "5": {"class_type": "AniPortraitFaceAnalysis", "inputs": {"face_landmarker": ["4", 0], "image": ["1", 0], "width": size, "height": size}},
        "6": {"class_type": "AniPortraitAudioFeatures", "inputs": {"audio": ["2", 0], "fps": 30.0}},
        "7": {"class_type": "AniPortraitAudio2Mesh", "inputs": {"audio2mesh": ["3", 0], "audio_features": ["6", 0], "face": ["5", 0]}},
        "8": {"class_type": "AniPortraitAudio2Pose", "inputs": {"audio2pose": ["3", 1], "audio_features": ["6", 0], "motion": ["7", 0],
                                                                "style_id": 0, "smoothing_window": 7, "rotation_scale": 0.5}},
        "9": {"class_type": "AniPortraitProjectLandmarks", "inputs": {"face": ["5", 0], "motion": ["8", 0], "width": size, "height": size}},
        "10": {"class_type": "AniPortraitLoadVideoModel", "inputs": {
            "reference_unet_name": "reference_unet.pth", "denoising_unet_name": "denoising_unet.pth",
            "motion_module_name": "motion_module.pth", "pose_guider_name": "pose_guider.pth", "weight_dtype": "auto"}},
        "11": {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}},
        "12": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip.safetensors"}},
        "13": {"class_type": "AniPortraitVideoConditioning", "inputs": {
            "vae": ["11", 0], "clip_vision": ["12", 0], "reference_image": ["1", 0], "landmarks": ["9", 0],
            "width": size, "height": size}},
        "16": {"class_type": "AniPortraitSampler", "inputs": {
            "model": ["10", 0], "seed": 42, "steps": steps, "cfg": 1.0, "positive": ["13", 0], "negative": ["13", 1],
            "latent_image": ["13", 2], "context_frames": 16, "context_overlap": 4, "window_batch": 1,
            "compile": "off"}},
        "14": {"class_type": "AniPortraitDecodeToVideo", "inputs": {"samples": ["16", 0], "vae": ["11", 0], "fps": 30.0,
                                                                    "chunk_frames": 16, "quality": "h264", "crf": 19, "audio": ["2", 0]}},
        "15": {"class_type": "SaveVideo", "inputs": {"video": ["14", 0], "filename_prefix": "long/video", "format": "auto", "codec": "auto"}},
    }


class RssSampler(threading.Thread):
    """Samples the RSS of the process listening on ``port`` (and its children) every ``period`` s."""

    def __init__(self, port: int, period: float = 0.5):
        super().__init__(daemon=True)
        import psutil

        self.proc = next(psutil.Process(c.pid) for c in psutil.net_connections("tcp")
                         if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid)
        self.period, self.samples, self.stop = period, [], threading.Event()

    def rss(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running())

    def run(self) -> None:
        start = time.time()
        while not self.stop.is_set():
            self.samples.append((time.time() - start, self.rss()))
            time.sleep(self.period)


def run_measured(server, prompt: dict, what: str, csv: Path | None, timeout: float) -> tuple[dict, float, int, int]:
    """Run ``prompt`` while sampling the server's RSS: ``(history, wall seconds, idle bytes, peak bytes)``; the RSS
    curve goes to ``csv`` when given. A failed prompt raises with its message."""
    sampler = RssSampler(server.port)
    idle = sampler.rss()
    sampler.start()
    started = time.time()
    history = server.run(prompt, timeout=timeout)
    wall = time.time() - started
    sampler.stop.set()
    sampler.join()
    error = execution_error(history)
    if error:
        raise RuntimeError(f"{what} failed: {error.get('exception_message')}")
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        csv.write_text("seconds,rss_bytes\n" + "".join(f"{t:.1f},{r}\n" for t, r in sampler.samples))
    return history, wall, idle, max(r for _, r in sampler.samples)


def run_one(seconds: float, size: int, steps: int, csv_dir: Path | None) -> dict:
    from PIL import Image
    from skimage import data

    work = Path(tempfile.mkdtemp(prefix=f"aniportrait-long-{int(seconds)}s-"))
    save_models(work / "models")
    server = start_server(work)
    try:
        Image.fromarray(data.astronaut()[10:220, 120:330]).save(server.input_dir / "portrait.png")
        make_speech(server.input_dir / "speech.wav", seconds)
        csv = csv_dir / f"rss_{int(seconds)}s.csv" if csv_dir is not None else None
        _, wall, idle, peak = run_measured(server, prompt(size, steps), f"{seconds} s", csv, 6 * 3600)
        return {"seconds": seconds, "frames": int(np.ceil(seconds * 30)), "wall_s": wall, "idle_gib": idle / 2**30, "peak_gib": peak / 2**30}
    finally:
        stop_server(server)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 600.0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--csv", type=Path, default=None, help="folder for the RSS curves")
    args = ap.parse_args()
    rows = [run_one(s, args.size, args.steps, args.csv) for s in args.seconds]
    print(f"{'audio':>8} {'frames':>7} {'wall':>9} {'server idle':>12} {'server peak':>12} {'peak - idle':>12}")
    for r in rows:
        print(f"{r['seconds']:7.0f}s {r['frames']:7d} {r['wall_s']:8.1f}s {r['idle_gib']:11.2f}G {r['peak_gib']:11.2f}G "
              f"{r['peak_gib'] - r['idle_gib']:11.2f}G")


if __name__ == "__main__":
    main()
