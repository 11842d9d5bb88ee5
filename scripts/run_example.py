"""Run an example AniPortrait workflow on ComfyUI and print where its output went (last line).

The workflow is the API twin of workflows/<NAME>.json (tests/e2e/prompts/<NAME>_api.json) with the bundled
example inputs of example_inputs/ (a portrait, a photo, a speech clip, short driving, head-motion and dubbing
videos) unless --image/--audio/--video name others. Inputs are copied into ComfyUI's input folder, never over
a file that is there. The arguments (and, without --demo, that the model files are there) are checked before
anything is installed or started.

Which ComfyUI: --comfyui PATH (or env ANIPORTRAIT_COMFYUI) runs it on your ComfyUI install, with its Python
(PATH/venv, PATH/.venv, else the python running this script; or --python), its models folder (PATH/models
unless --models), its GPU (--cpu only when its torch sees no CUDA/MPS/XPU) and its output folder; the pack
is symlinked into its custom_nodes/ if it is not there. Without it: the vendored ComfyUI that
scripts/setup_env.sh installs in ~/.cache/aniportrait-ci (CPU), models from --models (default, as for
scripts/fetch_models.py: $ANIPORTRAIT_MODELS, else the models folder of the ComfyUI this pack is installed
in, else ~/aniportrait-models), input/output in ~/.cache/aniportrait-ci/example/.

Model files: the real ones, under the names of scripts/fetch_models.py (.safetensors/.pth/.pt copies of
the AniPortrait files work too). Missing or wrong files stop the run before ComfyUI starts, with where to
get each. --demo instead runs on RANDOM weights kept in their own folder (~/.cache/aniportrait-demo-models,
names demo-random-*): a quick check that everything runs; the video is noise. Nothing is ever written into
a models folder.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_INPUTS = REPO / "example_inputs"
WORKFLOWS = ("aniportrait_audio2video", "aniportrait_audio2video_ksampler", "aniportrait_stage1", "aniportrait_pose_template",
             "aniportrait_reenactment", "aniportrait_photo_paste_back", "aniportrait_dubbing", "aniportrait_two_speakers")
DEMO_BANNER = "DEMO: random weights, the video is noise"
#: loader node -> (its file input, the option that replaces it)
INPUT_NODES = {"LoadImage": ("image", "image"), "LoadAudio": ("audio", "audio"), "LoadVideo": ("file", "video")}
#: the pack's import names that a ComfyUI's Python must have (requirements.txt)
PACK_MODULES = ("numpy", "scipy", "safetensors", "diffusers", "transformers", "mediapipe", "cv2", "soxr")
ALT_SUFFIXES = (".safetensors", ".pth", ".pt")


class Fail(Exception):
    """A problem told in one message; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def say(text: str = "") -> None:
    print(text, flush=True)


# ----------------------------------------------------------------------------------------------- arguments
class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors in one line (no usage block), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from model_files import DEFAULT_MODELS_HELP

    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workflow", default="aniportrait_audio2video", choices=WORKFLOWS,
                    help="which workflow to run (default: aniportrait_audio2video, the whole pipeline)")
    ap.add_argument("--image", type=Path, help="your portrait, or your photo for aniportrait_photo_paste_back "
                                               "(default: the workflow's image in example_inputs/)")
    ap.add_argument("--audio", type=Path, help="your speech clip (default: example_inputs/aniportrait_speech.wav); for "
                                               "aniportrait_two_speakers the left person's")
    ap.add_argument("--audio2", type=Path, help="aniportrait_two_speakers: the right person's speech (as long as --audio)")
    ap.add_argument("--video", type=Path, help="your driving video (reenactment), head-motion video (pose template) "
                                               "or video to dub (dubbing); default: the workflow's video in example_inputs/")
    ap.add_argument("--comfyui", type=Path, default=os.environ.get("ANIPORTRAIT_COMFYUI") or None,
                    help="your ComfyUI folder (env ANIPORTRAIT_COMFYUI); default: the vendored one")
    ap.add_argument("--python", help="the Python of that ComfyUI (default: PATH/venv, PATH/.venv, else this one)")
    ap.add_argument("--models", type=Path,
                    help=f"models folder (default: PATH/models with --comfyui, else {DEFAULT_MODELS_HELP}; "
                         f"fetch_models.py uses the same)")
    ap.add_argument("--demo", action="store_true",
                    help="run on random demo weights (their own folder, never your models): the video is noise")
    ap.add_argument("--no-check", action="store_true", help="skip the offline layout check of the model files")
    ap.add_argument("--size", type=int, default=512, help="video width = height in pixels, a multiple of 8 (default 512)")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--port", type=int, help="port of the ComfyUI server (default: a free one)")
    ap.add_argument("--work", type=Path, default=None,
                    help="input/output folder of the vendored ComfyUI (default ~/.cache/aniportrait-ci/example)")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is there")
    # run_example.sh: check the arguments and the model files with the system Python, before the install
    ap.add_argument("--preflight", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def models_folder(args: argparse.Namespace) -> Path:
    """--models, else PATH/models with --comfyui, else the default that fetch_models.py uses too."""
    if args.models is not None:
        return args.models
    if args.comfyui is not None:
        return args.comfyui / "models"
    from model_files import default_models_dir

    return default_models_dir()[0]


def preflight(args: argparse.Namespace) -> dict:
    """What fails before anything is installed or started (needs no torch): the arguments, then, without
    --demo, model files missing from the models folder (their layout is checked later, with torch)."""
    prompt = load_prompt(args.workflow)
    check_args(args, prompt)
    if not args.demo:
        find_real_files(needed_files(prompt), models_folder(args), check=False)
    return prompt


def check_args(args: argparse.Namespace, prompt: dict) -> None:
    """Every problem with the arguments in one sentence each, before anything starts (exit code 2)."""
    used = {opt for _, _, opt in input_slots(prompt)}
    for opt in ("image", "audio", "audio2", "video"):
        path = getattr(args, opt)
        if path is None:
            continue
        if opt not in used:
            raise Fail(f"--{opt}: the workflow {args.workflow} has no {opt} input", 2)
        if not path.is_file():
            raise Fail(f"--{opt} {path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}", 2)
    if args.size < 64 or args.size % 8:
        raise Fail(f"--size {args.size}: use a multiple of 8 from 64 up (e.g. 512)", 2)
    if args.steps < 1:
        raise Fail(f"--steps {args.steps}: use at least 1", 2)
    if args.comfyui is not None:
        if not (args.comfyui / "main.py").is_file():
            raise Fail(f"--comfyui {args.comfyui}: not a ComfyUI folder (no main.py there)", 2)
    if args.python is not None and shutil.which(args.python) is None:
        raise Fail(f"--python {args.python}: no such program", 2)


# ----------------------------------------------------------------------------------------------- the prompt
def load_prompt(name: str) -> dict:
    return json.loads((REPO / "tests" / "e2e" / "prompts" / f"{name}_api.json").read_text())


def set_options(prompt: dict, size: int, steps: int, seed: int) -> None:
    for node in prompt.values():
        inputs = node["inputs"]
        if isinstance(inputs.get("width"), int) and isinstance(inputs.get("height"), int):
            inputs["width"] = inputs["height"] = size
        if isinstance(inputs.get("steps"), int):
            inputs["steps"] = steps
        if isinstance(inputs.get("seed"), int):
            inputs["seed"] = seed


def substitute(prompt: dict, names: dict[str, str]) -> None:
    """Replace every string input equal to a key of ``names`` by its value."""
    for node in prompt.values():
        for key, value in node["inputs"].items():
            if isinstance(value, str) and value in names:
                node["inputs"][key] = names[value]


def needed_files(prompt: dict) -> list:
    from model_files import MODEL_FILES

    values = {v for node in prompt.values() for v in node["inputs"].values() if isinstance(v, str)}
    return [f for f in MODEL_FILES if f.name in values]


# ----------------------------------------------------------------------------------------------- model files
def candidates(name: str) -> list[str]:
    """``name`` first, then its .safetensors/.pth/.pt copies (not for .task files)."""
    stem, suffix = os.path.splitext(name)
    if suffix == ".task":
        return [name]
    return [name] + [stem + s for s in ALT_SUFFIXES if s != suffix]


def find_real_files(files: list, models: Path, check: bool) -> dict[str, str]:
    """Workflow name -> name present in ``models``; raises Fail listing every missing or wrong file."""
    from model_files import check_file, human_size

    names, missing, wrong = {}, [], []
    for entry in files:
        folder = models / entry.folder
        found = next((c for c in candidates(entry.name) if (folder / c).is_file()), None)
        if found is None:
            missing.append(f"  {entry.folder}/{entry.name}  ({entry.what or entry.name}, {human_size(entry.approx_bytes)})\n"
                           f"      from {entry.source}")
            continue
        result = check_file(entry, folder / found) if check else None
        if result is not None and not result.ok:
            wrong.append(f"  {entry.folder}/{found}: {result.detail or result.status}")
            continue
        names[entry.name] = found
    if missing or wrong:
        lines = []
        if missing:
            lines += [f"{len(missing)} model file(s) missing in {models}:"] + missing
        if wrong:
            lines += [f"{len(wrong)} file(s) in {models} are not the right checkpoint (move them away first):"] + wrong
        lines += [f"Get them (never overwrites a file):  python {REPO / 'scripts' / 'fetch_models.py'} --models {models}",
                  "Or try the pipeline on random weights (the video is noise):  add --demo"]
        raise Fail("\n".join(lines))
    return names


def demo_dir() -> Path:
    return Path(os.environ.get("ANIPORTRAIT_DEMO_MODELS", Path.home() / ".cache" / "aniportrait-demo-models"))


def demo_name(name: str) -> str:
    return f"demo-random-{name}" if not name.endswith(".task") else f"demo-{name}"


def place_new(folder: Path, name: str, write) -> Path:
    """Create ``folder/name`` by ``write(tmp_path)`` + a hard link: never replaces a file that is there."""
    target = folder / name
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=Path(name).suffix, dir=folder)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)
        write(Path(tmp))
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass  # made by another run meanwhile
        except OSError:  # no hard links here: exclusive create + copy
            with open(tmp, "rb") as src, open(target, "xb") as dst:
                shutil.copyfileobj(src, dst)
    finally:
        os.unlink(tmp)
    return target


def landmarker_source(models: Path | None) -> Path | str:
    """A real face_landmarker.task to copy into the demo folder: the models folder's, the shared assets', else the URL."""
    from model_files import LANDMARKER_URL

    for p in ([models / "aniportrait" / "face_landmarker.task"] if models else []) + [
            Path(os.environ.get("ANIPORTRAIT_REFERENCE", REPO.parent / "shared" / "reference")).parent / "assets" / "face_landmarker.task"]:
        if p.is_file():
            return p
    return LANDMARKER_URL


def make_demo_files(files: list, folder: Path, models: Path | None) -> dict[str, str]:
    """Random weights (and a copy of the real face landmarker) for ``files`` in ``folder``, under demo names."""
    import torch

    from support import random_weights as rw

    lmk2video = {}

    def stage2(role: str):
        if not lmk2video:
            lmk2video.update(rw.lmk2video_state_dicts(0))
        return lmk2video[role]

    def landmarker(tmp: Path) -> None:
        src = landmarker_source(models)
        if isinstance(src, Path):
            shutil.copyfile(src, tmp)
        else:
            import urllib.request
            say(f"downloading {src}")
            try:
                with urllib.request.urlopen(src, timeout=60) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f)
            except OSError as exc:  # no network, proxy, DNS: URLError and socket errors
                raise Fail(f"the demo needs the real face landmarker and its download failed "
                           f"({getattr(exc, 'reason', None) or exc}): put face_landmarker.task from {src} "
                           f"in {(models or Path('<models>')) / 'aniportrait'}, or pass --models with a folder that has it")

    writers = {
        "audio2mesh.pt": lambda p: torch.save(rw.audio2mesh_state_dict(0), p),
        "audio2pose.pt": lambda p: torch.save(rw.audio2pose_state_dict(1), p),
        "reference_unet.pth": lambda p: torch.save(stage2("reference_unet"), p),
        "denoising_unet.pth": lambda p: torch.save(stage2("denoising_unet"), p),
        "motion_module.pth": lambda p: torch.save(stage2("motion_module"), p),
        "pose_guider.pth": lambda p: torch.save(stage2("pose_guider"), p),
        "sd-vae-ft-mse.safetensors": lambda p: rw.save_sd_vae(p),
        "sd-image-variations-image-encoder.safetensors": lambda p: rw.save_clip_vision_vitl(p),
        "face_landmarker.task": landmarker,
    }
    names = {}
    for entry in files:
        name = demo_name(entry.name)
        if not (folder / entry.folder / name).exists():
            say(f"making demo file {folder / entry.folder / name}")
        place_new(folder / entry.folder, name, writers[entry.name])
        names[entry.name] = name
    return names


# ----------------------------------------------------------------------------------------------- inputs
def copy_input(src: Path, input_dir: Path) -> str:
    """Copy ``src`` into ``input_dir`` under its name, or ``stem_<hash>`` when another file has that name;
    an identical file already there is reused. Returns the name to put in the prompt."""
    data = src.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    for name in (src.name, f"{src.stem}_{digest[:10]}{src.suffix}"):
        target = input_dir / name
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            return name
        if not target.exists():
            place_new(input_dir, name, lambda p: p.write_bytes(data))
            return name
    raise Fail(f"cannot place {src.name} in {input_dir}: both {src.name} and its hashed name are taken by other files")


def input_slots(prompt: dict) -> list[tuple[dict, str, str]]:
    """``(node, its file input, the option that replaces it)`` of each input loader; a second Load Audio (the
    second speaker) is ``--audio2``."""
    slots, seen = [], {}
    for node in prompt.values():
        if node["class_type"] in INPUT_NODES:
            key, opt = INPUT_NODES[node["class_type"]]
            seen[opt] = seen.get(opt, 0) + 1
            slots.append((node, key, opt if seen[opt] == 1 else f"{opt}{seen[opt]}"))
    return slots


def place_inputs(prompt: dict, args: argparse.Namespace, input_dir: Path) -> None:
    input_dir.mkdir(parents=True, exist_ok=True)
    for node, key, opt in input_slots(prompt):
        src = getattr(args, opt) or EXAMPLE_INPUTS / node["inputs"][key]
        node["inputs"][key] = copy_input(src, input_dir)


# ----------------------------------------------------------------------------------------------- ComfyUI
def comfy_python(args: argparse.Namespace) -> str:
    if args.python:
        return shutil.which(args.python) or args.python
    for rel in ("venv/bin/python", ".venv/bin/python", "venv/Scripts/python.exe", "../python_embeded/python.exe"):
        if (args.comfyui / rel).is_file():
            return str(args.comfyui / rel)
    return sys.executable


def probe(python: str) -> tuple[str, list[str]]:
    """(accelerator torch sees: cuda/mps/xpu/cpu, pack modules that do not import) in that Python."""
    code = ("import importlib, json, torch\n"
            "acc = 'cuda' if torch.cuda.is_available() else 'mps' if getattr(torch.backends, 'mps', None) "
            "and torch.backends.mps.is_available() else 'xpu' if getattr(torch, 'xpu', None) and torch.xpu.is_available() else 'cpu'\n"
            "bad = []\n"
            f"for m in {PACK_MODULES!r}:\n"
            "    try: importlib.import_module(m)\n"
            "    except Exception: bad.append(m)\n"
            "print(json.dumps([acc, bad]))\n")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    except OSError as exc:
        raise Fail(f"cannot run {python}: {exc}")
    if out.returncode != 0:
        raise Fail(f"{python} cannot import torch (is it your ComfyUI's Python? pass --python): "
                   f"{out.stderr.strip().splitlines()[-1] if out.stderr.strip() else 'exit ' + str(out.returncode)}")
    acc, bad = json.loads(out.stdout.strip().splitlines()[-1])
    return acc, bad


def link_pack(root: Path) -> str:
    """Make sure ComfyUI at ``root`` loads this pack: reuse an entry of custom_nodes/ that is this folder or
    another copy of the pack, else symlink custom_nodes/aniportrait -> this folder. Returns what it did."""
    custom = root / "custom_nodes"
    custom.mkdir(exist_ok=True)
    for entry in sorted(custom.iterdir()):
        if entry.is_dir() and entry.resolve() == REPO:
            return f"the pack is in {entry}"
    for entry in sorted(custom.iterdir()):
        pyproject = entry / "pyproject.toml"
        if entry.is_dir() and not entry.name.endswith(".disabled") and pyproject.is_file() \
                and 'name = "aniportrait-nodes"' in pyproject.read_text(errors="replace"):
            return f"uses the copy of the pack already installed in {entry} (not {REPO})"
    link = custom / "aniportrait"
    if link.exists() or link.is_symlink():
        raise Fail(f"{link} exists and is another folder; the pack cannot be linked in under that name. "
                   f"Link it yourself: ln -s {REPO} {custom}/<another name>")
    link.symlink_to(REPO, target_is_directory=True)
    return f"linked the pack: {link} -> {REPO} (delete the link to remove it)"


class Progress:
    """Prints one line per node and throttled progress lines with an ETA."""

    def __init__(self, prompt: dict, steps: int):
        self.prompt, self.steps, self.t0 = prompt, steps, time.time()
        self.node_start: dict[str, float] = {}
        self.last_print = 0.0

    def stamp(self) -> str:
        s = int(time.time() - self.t0)
        return f"[{s // 60:2d}:{s % 60:02d}]"

    def title(self, node: str | None) -> str:
        n = self.prompt.get(str(node), {})
        return f"{n.get('class_type', '?')} (node {node})"

    def __call__(self, kind: str, data: dict) -> None:
        node = data.get("node")
        if kind == "executing" and node is not None:
            self.node_start[node] = time.time()
            say(f"{self.stamp()} {self.title(node)}")
        elif kind == "execution_cached" and data.get("nodes"):
            say(f"{self.stamp()} cached: {', '.join(map(str, data['nodes']))}")
        elif kind == "progress":
            value, total = int(data.get("value", 0)), max(1, int(data.get("max", 1)))
            now = time.time()
            if value < total and now - self.last_print < 2.0:
                return
            self.last_print = now
            elapsed = now - self.node_start.get(node, self.t0)
            eta = elapsed / value * (total - value) if value else 0
            what = f"{value}/{total}"
            if self.prompt.get(str(node), {}).get("class_type") == "AniPortraitSampler" and total % self.steps == 0:
                windows = total // self.steps
                step, window = min(self.steps, value // windows + (value % windows > 0)), (value - 1) % windows + 1 if value else 0
                what = f"step {step}/{self.steps}, window {window}/{windows} ({value}/{total})"
            say(f"{self.stamp()}   {what}, {100 * value // total}%, ETA {int(eta) // 60}:{int(eta) % 60:02d}")


def outputs_of(history: dict, server) -> list[Path]:
    files = []
    for out in history.get("outputs", {}).values():
        for items in out.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output":
                    files.append(server.output_dir / item.get("subfolder", "") / item["filename"])
    return files


def start_comfyui(args: argparse.Namespace, python: str, acc: str, folder: Path, port: int):
    """Start ``args.comfyui`` (pack linked in, demo folder added) or the vendored ComfyUI on ``port``;
    ``folder``: the models (or demo-weights) folder."""
    from support.comfy_server import comfy_dir, start_existing, start_server, stop_server

    if args.comfyui is None:
        work = args.work or comfy_dir() / "example"
        say(f"starting the vendored ComfyUI ({comfy_dir()}) on the CPU, port {port}; "
            f"log: {comfy_dir() / 'run' / f'comfyui-{port}.log'}")
        try:
            return start_server(work, port=port, models=folder)
        except RuntimeError as exc:
            raise Fail(f"the vendored ComfyUI did not start ({str(exc).splitlines()[0]}); "
                       f"log: {comfy_dir() / 'run' / f'comfyui-{port}.log'}") from None
    say(link_pack(args.comfyui))
    extra = None
    if args.demo:
        extra = folder / "extra_model_paths.yaml"
        extra.write_text(f"aniportrait_demo:\n    base_path: {folder}\n    aniportrait: aniportrait\n"
                         "    vae: vae\n    clip_vision: clip_vision\n")
    cpu = args.cpu or acc == "cpu"
    log = Path(tempfile.gettempdir()) / "aniportrait-example" / f"comfyui-{port}.log"
    say(f"starting ComfyUI {args.comfyui} with {python} on {'the CPU' if cpu else acc.upper()}, port {port}; log: {log}")
    try:
        server = start_existing(args.comfyui, python, port, cpu=cpu, extra_model_paths=extra, log=log)
    except RuntimeError as exc:
        raise Fail(f"ComfyUI did not start ({str(exc).splitlines()[0]}); log: {log}") from None
    if "AniPortraitSampler" not in server.object_info():
        stop_server(server)
        raise Fail(f"ComfyUI started but the pack's nodes are not there: see 'IMPORT FAILED' in {log}")
    return server


# ----------------------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> int:
    prompt = load_prompt(args.workflow)
    check_args(args, prompt)
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "scripts"))
    sys.path.insert(0, str(REPO / "tests"))
    set_options(prompt, args.size, args.steps, args.seed)
    files = needed_files(prompt)

    python, acc = sys.executable, "cpu"
    if args.comfyui is not None:
        args.comfyui = args.comfyui.resolve()
        python = comfy_python(args)
        acc, bad = probe(python)
        if bad:
            raise Fail(f"the pack's requirements are missing in {python} ({', '.join(bad)}): run  "
                       f"{python} -m pip install -r {REPO / 'requirements.txt'}")
    models = models_folder(args)
    if args.demo:
        folder = demo_dir()
        say(f"demo weights: {folder} (your models folder is not used or touched)")
        names = make_demo_files(files, folder, models if models.is_dir() else None)
    else:
        folder = models
        names = find_real_files(files, models, check=not args.no_check)
    substitute(prompt, names)

    from support.comfy_server import comfy_dir, execution_error, free_port, run_with_events, stop_server

    port = args.port or free_port()
    server = None
    try:
        server = start_comfyui(args, python, acc, folder, port)
        place_inputs(prompt, args, server.input_dir)
        say(f"running {args.workflow} at {args.size}x{args.size}, {args.steps} steps, seed {args.seed} on {server.url}")
        start = time.time()
        history = run_with_events(server, prompt, Progress(prompt, args.steps))
        err = execution_error(history)
        if err:
            raise Fail(f"{err['node_type']} (node {err['node_id']}) failed: {err['exception_message'].strip()}\n"
                       f"ComfyUI log: {server.log}")
        if history.get("status", {}).get("status_str") not in (None, "success"):
            raise Fail(f"the run did not finish ({history['status'].get('status_str')}); ComfyUI log: {server.log}")
        files_out = outputs_of(history, server)
        videos = [p for p in files_out if p.suffix in (".mp4", ".webm", ".mkv", ".mov")]
        say(f"done in {time.time() - start:.0f} s: {len(files_out)} file(s) in {server.output_dir}")
        main_out = videos[-1] if videos else (files_out[0] if files_out else server.output_dir)
        if not videos and len(files_out) > 1:
            say(f"{len(files_out)} images: {files_out[0].name} .. {files_out[-1].name}")
        if args.demo:
            say(f"{DEMO_BANNER}: {main_out}")
        else:
            say(str(main_out))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping ComfyUI", file=sys.stderr, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # one Ctrl-C is enough: let the clean-up finish
        if server is not None:
            stop_server(server)
        elif args.comfyui is None:
            from support.comfy_server import VENDOR  # stop a server whose start was interrupted
            subprocess.run(["bash", str(VENDOR / "start-comfyui.sh"), "--dir", str(comfy_dir()),
                            "--port", str(port), "--stop"], capture_output=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the library's warnings (e.g. the reason a checkpoint was refused) stay out of the output: every file
    # problem is told in the run's own words
    logging.basicConfig(level=logging.ERROR, format="  (%(message)s)")
    if args.preflight:
        try:
            preflight(args)
        except Fail as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return exc.code
        return 0
    if args.demo and not os.environ.get("_ANIPORTRAIT_DEMO_BANNER_SHOWN"):
        say(DEMO_BANNER)
    try:
        rc = run(args)
    except Fail as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        rc = exc.code
    except KeyboardInterrupt:  # before anything started
        print("\ninterrupted", file=sys.stderr, flush=True)
        rc = 130
    if rc and args.demo:
        say(DEMO_BANNER)
    return rc


if __name__ == "__main__":
    sys.exit(main())
