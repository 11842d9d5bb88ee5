"""Dubbing a long 1080p video through a real ComfyUI server: peak RSS, time, and the output checked frame by frame.

The source is made here: a real portrait clip (``../shared/assets/real/``, scaled to 900x900 and played back and
forth) in the middle of a 1920x1080 photo background that pans 4 px per frame (camera motion, so a repeated or
dropped background frame would show), at 25 fps, H.264. The speech is espeak-ng, as long as the video.

The workflow is the shipped ``aniportrait_dubbing`` prompt, shrunk as the long-audio benchmark does: crops and
the sampler at 64x64, 2 steps, cfg 1, tiny random video models, TAESD with random weights as the VAE. Each length
runs on a fresh server; the server's RSS (with its children) is sampled every 0.5 s. Afterwards the output is
checked: size, frame count and rate equal the source's, the audio's length, and each output frame's background
(left and right of the portrait, never inside the paste mask) against the same source frame and its neighbours.

    python tools/benchmark_long_video.py --seconds 10 60 600 [--csv DIR] [--keep DIR]
    python tools/benchmark_long_video.py --plot DIR/rss_dub_10s.csv DIR/rss_dub_600s.csv curve.png
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_long_audio import make_speech, run_measured, save_models  # noqa: E402
from support.comfy_server import start_server, stop_server  # noqa: E402

WIDTH, HEIGHT, FPS = 1920, 1080, 25
PORTRAIT = 900  # px, centred
PAN = 4  # px per frame
BACKGROUND = np.r_[0:(WIDTH - PORTRAIT) // 2 - 40, (WIDTH + PORTRAIT) // 2 + 40:WIDTH]  # columns outside the portrait
CLIP = REPO.parent / "shared" / "assets" / "real" / "api_kling_avatar2-1.webp"


def _portrait_frames() -> list[np.ndarray]:
    from PIL import Image

    im = Image.open(CLIP)
    frames = []
    for i in range(im.n_frames):
        im.seek(i)
        frames.append(np.asarray(im.convert("RGB").resize((PORTRAIT, PORTRAIT), Image.BICUBIC)))
    return frames + frames[-2:0:-1]  # back and forth: no jump when it repeats


def _background() -> np.ndarray:
    """A panorama twice the frame's width (the pan goes back and forth over it)."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.coffee()).resize((2 * WIDTH, HEIGHT), Image.BICUBIC))


def source_frame(t: int, portrait: list[np.ndarray], panorama: np.ndarray) -> np.ndarray:
    span = panorama.shape[1] - WIDTH
    x = (t * PAN) % (2 * span)
    x = x if x <= span else 2 * span - x
    frame = panorama[:, x:x + WIDTH].copy()
    top, left = (HEIGHT - PORTRAIT) // 2, (WIDTH - PORTRAIT) // 2
    frame[top:top + PORTRAIT, left:left + PORTRAIT] = portrait[t % len(portrait)]
    return frame


def make_source(path: Path, seconds: float) -> int:
    """Write the source video; returns its frame count."""
    import av

    portrait, panorama = _portrait_frames(), _background()
    count = int(round(seconds * FPS))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for t in range(count):
            frame = av.VideoFrame.from_ndarray(source_frame(t, portrait, panorama), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return count


def prompt() -> dict:
    """The shipped dubbing prompt with the benchmark's small settings."""
    shipped = json.loads((REPO / "tests" / "e2e" / "prompts" / "aniportrait_dubbing_api.json").read_text())
    prompt = copy.deepcopy(shipped)
    for node in prompt.values():
        cls, inputs = node["class_type"], node["inputs"]
        if cls in ("AniPortraitFaceCrop", "AniPortraitFaceAnalysis", "AniPortraitProjectLandmarks",
                   "AniPortraitVideoConditioning"):
            inputs["width"] = inputs["height"] = 64
        elif cls == "AniPortraitSampler":
            inputs.update(steps=2, cfg=1.0)
        elif cls == "VAELoader":
            inputs["vae_name"] = "taesd"
        elif cls == "CLIPVisionLoader":
            inputs["clip_name"] = "clip.safetensors"
        elif cls == "LoadAudio":
            inputs["audio"] = "speech.wav"
        elif cls == "SaveVideo":
            inputs["filename_prefix"] = "long/dubbed"
    return prompt


def check_output(path: Path, source: Path, frames: int, seconds: float) -> dict:
    """Size, rate, frame count, audio length, and the background of every frame against the source's."""
    import av

    with av.open(str(path)) as out, av.open(str(source)) as src:
        stream = out.streams.video[0]
        size = (stream.codec_context.width, stream.codec_context.height)
        rate = float(stream.average_rate)
        worst, judder, count = 0.0, 0, 0
        previous_src, current_src = None, None
        src_frames = src.decode(video=0)
        for frame in out.decode(stream):
            count += 1
            source_frame = next(src_frames, None)
            if source_frame is None:  # more output frames than source frames (a re-timed output): nothing to compare
                continue
            got = frame.to_ndarray(format="rgb24")[:, BACKGROUND].astype(np.int16)
            previous_src, current_src = current_src, source_frame.to_ndarray(format="rgb24")[:, BACKGROUND].astype(np.int16)
            same = np.abs(got - current_src).mean()
            worst = max(worst, same)
            if previous_src is not None and np.abs(got - previous_src).mean() <= same:
                judder += 1
        out.seek(0)
        audio = sum(f.samples for f in out.decode(audio=0)) / out.streams.audio[0].rate if out.streams.audio else 0.0
    return {"size": size, "fps": rate, "frames": count, "want_frames": frames, "audio_s": audio, "want_audio_s": seconds,
            "background_max_mean_diff": worst, "frames_closer_to_previous_source_frame": judder}


def run_one(seconds: float, csv_dir: Path | None, keep: Path | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"aniportrait-dub-{int(seconds)}s-"))
    save_models(work / "models")
    server = start_server(work)
    try:
        t0 = time.time()
        frames = make_source(server.input_dir / "dubbing_source.mp4", seconds)
        make_speech(server.input_dir / "speech.wav", seconds)
        made = time.time() - t0
        csv = csv_dir / f"rss_dub_{int(seconds)}s.csv" if csv_dir is not None else None
        history, wall, idle, peak = run_measured(server, prompt(), f"{seconds} s", csv, 8 * 3600)
        video = next(v for out in history["outputs"].values() for v in out.get("images", []) if v["filename"].endswith(".mp4"))
        path = server.output_dir / video["subfolder"] / video["filename"]
        checked = check_output(path, server.input_dir / "dubbing_source.mp4", frames, seconds)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            path.rename(keep / f"dubbed_{int(seconds)}s.mp4")
        return {"seconds": seconds, "source_frames": frames, "made_s": made, "wall_s": wall, "idle_gib": idle / 2**30,
                "peak_gib": peak / 2**30, **checked}
    finally:
        stop_server(server)


def plot(csvs: list[Path], out: Path) -> None:
    """The RSS curves of the CSVs (``rss_dub_<N>s.csv``) in one picture, time on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    for csv in csvs:
        data = np.loadtxt(csv, delimiter=",", skiprows=1, ndmin=2)
        ax.plot(np.maximum(data[:, 0], 0.5), data[:, 1] / 2**30, label=csv.stem.replace("rss_dub_", "").replace("_", " "))
    ax.set_xscale("log")
    ax.set_xlabel("seconds since the prompt was queued")
    ax.set_ylabel("server RSS (GiB)")
    ax.set_title("Dubbing 1920x1080 25 fps: server memory over time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0, 600.0])
    ap.add_argument("--csv", type=Path, default=None, help="folder for the RSS curves")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the dubbed videos in")
    ap.add_argument("--plot", type=Path, nargs="+", default=None, metavar="FILE",
                    help="only draw: the RSS CSVs given, into the last path (a .png)")
    args = ap.parse_args()
    if args.plot:
        plot(args.plot[:-1], args.plot[-1])
        return
    rows = []
    for s in args.seconds:
        rows.append(run_one(s, args.csv, args.keep))
        print(json.dumps(rows[-1]), flush=True)
    print(f"{'source':>7} {'frames':>7} {'wall':>8} {'idle':>7} {'peak':>7} {'peak-idle':>9} {'out frames':>10} {'fps':>5} "
          f"{'audio':>7} {'bg diff':>7} {'judder':>6}")
    for r in rows:
        print(f"{r['seconds']:6.0f}s {r['source_frames']:7d} {r['wall_s']:7.0f}s {r['idle_gib']:6.2f}G {r['peak_gib']:6.2f}G "
              f"{r['peak_gib'] - r['idle_gib']:8.2f}G {r['frames']:10d} {r['fps']:5g} {r['audio_s']:6.1f}s "
              f"{r['background_max_mean_diff']:7.2f} {r['frames_closer_to_previous_source_frame']:6d}")


if __name__ == "__main__":
    main()
