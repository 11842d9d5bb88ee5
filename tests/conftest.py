"""Shared test fixtures: where the reference goldens live, golden tolerances, the e2e server and how to read its reports."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """The reference folder (env ANIPORTRAIT_REFERENCE, default ../shared/reference from the repo root)."""
    return Path(os.environ.get("ANIPORTRAIT_REFERENCE", REPO_ROOT.parent / "shared" / "reference")).resolve()


def golden_case(kind: str) -> Path:
    """Folder of golden case ``kind``; fails (not skips) when the reference is absent."""
    folder = reference_dir() / "golden" / kind
    assert (folder / "case.json").is_file(), f"golden case {kind} not found at {folder}"
    return folder


def load_case(kind: str) -> tuple[Path, dict]:
    folder = golden_case(kind)
    return folder, json.loads((folder / "case.json").read_text())


def manifest(name: str) -> dict[str, list[int]]:
    return json.loads((reference_dir() / "manifests" / f"{name}.json").read_text())


#: a number in a case.json tolerance text, not part of a word (``out_fea0``) or a version (``0.10.11``)
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")


def tolerance_numbers(text: str) -> list[float]:
    """Every number in a case.json tolerance text, in order."""
    return [float(x) for x in _NUMBER.findall(text)]


def tolerance(text: str) -> float:
    """The first number of a case.json tolerance text (``"abs 1e-4 (fp32 CPU); ..."`` -> 1e-4)."""
    numbers = tolerance_numbers(text)
    assert numbers, f"no number in tolerance {text!r}"
    return numbers[0]


def max_abs_err(a, b) -> float:
    """Max abs difference of two same-shaped arrays/tensors, computed in float64 (0 for empty ones)."""
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    b = b.detach().cpu().numpy() if hasattr(b, "detach") else np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape} != expected {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def report(name: str, err: float, limit: float) -> None:
    """Print a golden comparison's measured error and assert it is within the tolerance."""
    print(f"[golden] {name}: max abs err {err:.3g} (tolerance {limit:g})")
    assert err <= limit, f"{name}: {err} > {limit}"


def shared_assets_dir() -> Path:
    return reference_dir().parent / "assets"


def real_clip_frames(name: str, count: int | None = None) -> np.ndarray:
    """The first ``count`` (default: all) frames of a clip of ``../shared/assets/real/`` as uint8 (T, H, W, 3) RGB."""
    from PIL import Image

    with Image.open(shared_assets_dir() / "real" / name) as clip:
        frames = []
        for i in range(clip.n_frames if count is None else count):
            clip.seek(i)
            frames.append(np.asarray(clip.convert("RGB")))
    return np.stack(frames)


def ui_text(output) -> str:
    """The first line of text a node's output shows in the UI ("" when none)."""
    return output.ui.as_dict()["text"][0] if output.ui is not None else ""


def node_landmarker(pack):
    """The MediaPipe landmarker through the pack's loader node (the shipped .task copied into the pack's models)."""
    import shutil

    from aniportrait_pack.nodes import loaders

    folder = pack.work_dir / "models" / "aniportrait"
    if not (folder / "face_landmarker.task").exists():
        shutil.copyfile(shared_assets_dir() / "face_landmarker.task", folder / "face_landmarker.task")
    return loaders.LoadFaceLandmarker.execute("face_landmarker.task").result[0]


def anime_face(size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A flat anime-style drawing (big eyes, dot nose, small mouth) MediaPipe finds no face in, and its five points."""
    import cv2

    s = size / 512
    img = np.full((size, size, 3), (200, 225, 250), np.uint8)

    def p(x, y):
        return int(round(x * s)), int(round(y * s))

    cv2.ellipse(img, p(256, 250), p(230, 230), 0, 180, 360, (60, 40, 90), -1)  # hair
    cv2.ellipse(img, p(256, 280), p(150, 175), 0, 0, 360, (205, 225, 255), -1)  # face
    cv2.rectangle(img, p(100, 150), p(412, 200), (60, 40, 90), -1)  # fringe
    for ex, ey in ((196, 290), (316, 290)):
        cv2.ellipse(img, p(ex, ey), p(34, 44), 0, 0, 360, (255, 255, 255), -1)
        cv2.ellipse(img, p(ex, ey + 4), p(26, 38), 0, 0, 360, (180, 60, 40), -1)
        cv2.circle(img, p(ex, ey + 6), int(14 * s), (40, 10, 10), -1)
        cv2.circle(img, p(ex - 10, ey - 12), int(9 * s), (255, 255, 255), -1)
        cv2.ellipse(img, p(ex, ey - 40), p(40, 10), 0, 180, 360, (30, 20, 30), int(5 * s))
    cv2.circle(img, p(256, 355), int(3 * s), (150, 160, 210), -1)
    cv2.line(img, p(236, 400), p(276, 400), (80, 80, 200), int(4 * s))
    points = np.array([[196, 290], [316, 290], [256, 355], [236, 400], [276, 400]], float) * s
    return img, points


# ----------------------------------------------------------------------------- e2e: what ComfyUI reports


def frames_at_30fps(wav_path) -> int:
    """Video frames the pack makes from a wav at 30 fps (it resamples to 16 kHz with soxr, which keeps
    ``round(n * 16000 / rate)`` samples)."""
    import math
    import wave

    with wave.open(str(wav_path)) as w:
        n, rate = w.getnframes(), w.getframerate()
    return math.ceil(round(n * 16000 / rate) / 16000 * 30)


def resize_prompt(prompt: dict, size: tuple[int, int], nodes: tuple[str, ...]) -> None:
    """Set width/height of ``nodes`` (the face analysis, the projection, the sampler: the face is analysed at
    the video size, as in the original)."""
    for node in nodes:
        prompt[node]["inputs"]["width"], prompt[node]["inputs"]["height"] = size


def saved_mp4(server, history: dict, node: str) -> dict:
    """The mp4 a Save Video node wrote: its path, size, frame count, fps, codec and audio stream count."""
    import av

    from comfy_server import execution_error

    err = execution_error(history)
    assert err is None, err and (err.get("node_type"), err.get("exception_message"), err.get("traceback"))
    entry = history["outputs"][node]["images"][0]
    path = server.output_dir / entry["subfolder"] / entry["filename"]
    assert path.suffix == ".mp4" and path.stat().st_size > 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"path": path, "size": (stream.codec_context.width, stream.codec_context.height),
                "fps": float(stream.average_rate), "codec": stream.codec.name,
                "audio_streams": len(container.streams.audio)}
        info["frames"] = sum(1 for _ in container.decode(stream))
    return info


def node_text(history: dict, node: str) -> str:
    """The UI text (``ui.text``) a node showed in a finished prompt, lines joined."""
    return "\n".join(history["outputs"].get(node, {}).get("text", []))


def assert_missing_file_reported_once(history: dict, node_type: str, inputs: dict[str, str], input_name: str, folder: Path) -> None:
    """A model file named by ``inputs[input_name]`` that is not there: ONE execution error, from the
    loader, as a plain ValueError naming that file and ``folder``, and none of the node's other files.

    The vendored ComfyUI (0.3.64) checks combo values only for V1 list-typed inputs, not for V3
    ``io.Combo`` inputs, so the prompt is accepted and the loader reports the file when it runs.
    """
    errors = [data for kind, data in history.get("status", {}).get("messages", []) if kind == "execution_error"]
    assert len(errors) == 1, f"{len(errors)} execution errors: {errors}"
    err = errors[0]
    assert err["node_type"] == node_type, err["node_type"]
    assert_plain_user_error(err)
    msg = err["exception_message"]
    assert f"'{inputs[input_name]}' was not found" in msg and str(folder) in msg, msg
    others = [value for name, value in inputs.items() if name != input_name and isinstance(value, str) and "." in value]
    assert not [o for o in others if o in msg], f"the message names other files too: {msg}"


def assert_plain_user_error(err: dict) -> None:
    """The pack's errors reach ComfyUI as a plain ValueError whose text shows no install path."""
    assert err["exception_type"] == "ValueError", err["exception_type"]
    msg = err["exception_message"]
    assert str(REPO_ROOT) not in msg and "custom_nodes" not in msg and "aniportrait_lib" not in msg, msg


@pytest.fixture(scope="session")
def face_landmarker_path() -> Path:
    p = shared_assets_dir() / "face_landmarker.task"
    assert p.is_file(), f"face_landmarker.task not found at {p}"
    return p


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The vendored ComfyUI with this pack, tiny random models and test inputs (shared by the e2e tests)."""
    import shutil
    import subprocess

    import torch
    from PIL import Image

    from support import random_weights
    from comfy_server import start_server, stop_server

    work = tmp_path_factory.mktemp("comfy")
    srv = start_server(work)
    try:
        models = srv.models_dir / "aniportrait"
        random_weights.save_audio_models(models, seed=0)
        shutil.copyfile(shared_assets_dir() / "face_landmarker.task", models / "face_landmarker.task")
        broken = random_weights.audio2mesh_state_dict(0)
        broken["in_fn.weightt"] = broken.pop("in_fn.weight")
        torch.save(broken, models / "broken_audio2mesh.pt")

        from skimage import data
        photo = data.astronaut()[10:220, 120:330]
        Image.fromarray(photo).resize((512, 512), Image.BILINEAR).save(srv.input_dir / "aniportrait_reference.png")
        Image.new("RGB", (512, 512), (128, 128, 128)).save(srv.input_dir / "grey.png")
        speech = srv.input_dir / "aniportrait_speech.wav"
        subprocess.run(["espeak-ng", "-w", str(speech), "Hello, this is a portrait that talks."], check=True, timeout=60)
        subprocess.run(["espeak-ng", "-w", str(srv.input_dir / "short_speech.wav"), "Hi there."], check=True, timeout=60)
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="session")
def stage2_models(server):
    """Small Lmk2Video files + random full-architecture SD VAE and CLIP ViT-L (ComfyUI formats) in the server's folders."""
    from support import random_weights

    random_weights.save_lmk2video_models(server.models_dir / "aniportrait", seed=0)
    (server.models_dir / "vae").mkdir(exist_ok=True)
    (server.models_dir / "clip_vision").mkdir(exist_ok=True)
    random_weights.save_sd_vae(server.models_dir / "vae" / "sd-vae-ft-mse.safetensors")
    random_weights.save_clip_vision_vitl(server.models_dir / "clip_vision" / "sd-image-variations-image-encoder.safetensors")
    return server


# ----------------------------------------------------------------------------- in-process ComfyUI (tests/nodes)
# The vendored ComfyUI's own modules imported into this process, the pack imported the way ComfyUI
# imports a custom node, each node's ``execute`` called with real ComfyUI types.


def _import_comfyui(models_dir: Path, output_dir: Path) -> None:
    import sys

    from comfy_server import comfy_dir

    root = comfy_dir() / "ComfyUI"
    assert (root / "comfy").is_dir(), f"the vendored ComfyUI is not installed at {root}; run scripts/setup_env.sh"
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args  # not parsed from sys.argv: pytest's arguments are not ComfyUI's

    args.cpu = True  # the in-process tests run where the CI runs: on the CPU
    import folder_paths

    folder_paths.models_dir = str(models_dir)
    folder_paths.set_output_directory(str(output_dir))
    for kind in ("vae", "clip_vision"):
        folder_paths.add_model_folder_path(kind, str(models_dir / kind), is_default=True)


@pytest.fixture(autouse=True)
def node_tests_in_inference_mode(request):
    """In-process node tests (tests/nodes) run inside ``torch.inference_mode()``, as ComfyUI's executor runs every
    node (outside it, core's CLIP vision encode keeps its autograd state: ~1.8 GB per call on the CPU)."""
    if Path(str(request.node.fspath)).parent.name != "nodes":
        yield
        return
    import torch

    with torch.inference_mode():
        yield


@pytest.fixture(scope="session")
def pack(tmp_path_factory):
    import importlib.util
    import sys

    """The pack as ComfyUI imports it (package name ``aniportrait_pack``), over a temporary models folder."""
    work = tmp_path_factory.mktemp("comfy_inprocess")
    (work / "models" / "aniportrait" / "pose_templates").mkdir(parents=True)
    (work / "output").mkdir()
    _import_comfyui(work / "models", work / "output")
    spec = importlib.util.spec_from_file_location("aniportrait_pack", REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["aniportrait_pack"] = module
    spec.loader.exec_module(module)
    import aniportrait_pack.nodes  # noqa: F401  (registers the model folders)

    module.work_dir = work
    return module
