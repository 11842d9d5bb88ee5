"""scripts/run_example.py as a user runs it (a subprocess): it never writes into a models folder, refuses to
run on missing files before any server starts, runs on demo weights only with --demo (and says so), checks
its arguments first, and runs on an existing ComfyUI install (--comfyui) as well as on the vendored one."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "run_example.py"
sys.path.insert(0, str(REPO / "scripts"))

from support.comfy_server import comfy_dir  # noqa: E402

from support.paths import shared_assets_dir  # noqa: E402

pytestmark = pytest.mark.e2e

BANNER = "DEMO: random weights, the video is noise"
FAST = ["--size", "64", "--steps", "2"]


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and '<dir>' for every folder) under ``folder``."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models folder with one real-looking file (random audio2mesh.pt) and the real face landmarker; the rest missing."""
    import torch

    from support import random_weights

    folder = tmp_path_factory.mktemp("models")
    (folder / "aniportrait").mkdir()
    torch.save(random_weights.audio2mesh_state_dict(0), folder / "aniportrait" / "audio2mesh.pt")
    landmarker = shared_assets_dir() / "face_landmarker.task"
    if landmarker.is_file():
        shutil.copyfile(landmarker, folder / "aniportrait" / "face_landmarker.task")
    return folder


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory) -> dict[str, str]:
    """The environment of the runs: a demo-weights folder of this module (made once, shared by its tests)."""
    env = dict(os.environ)
    env["ANIPORTRAIT_DEMO_MODELS"] = str(tmp_path_factory.mktemp("demo-models"))
    env.pop("ANIPORTRAIT_COMFYUI", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_missing_files_fail_before_any_server_and_touch_nothing(models, demo_env):
    before = snapshot(models)
    t0 = time.time()
    proc = run(["--models", str(models)], demo_env, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text
    assert "starting" not in text and time.time() - t0 < 60, "no server may start with files missing"
    from model_files import MODEL_FILES

    for entry in MODEL_FILES:
        if entry.name in ("audio2mesh.pt", "face_landmarker.task"):
            continue
        assert f"{entry.folder}/{entry.name}" in text and entry.source in text, f"{entry.name} not listed with its source:\n{text}"
    # the present random audio2mesh.pt is not taken for the release file
    assert re.search(r"aniportrait/audio2mesh\.pt: expected audio2mesh\.pt", text), text
    assert f"fetch_models.py --models {models}" in text and "--demo" in text
    assert snapshot(models) == before, "the models folder changed"
    assert not any(Path(demo_env["ANIPORTRAIT_DEMO_MODELS"]).iterdir()), "no demo weights without --demo"


def test_bad_input_path_is_one_sentence_before_anything_starts(models, demo_env, tmp_path):
    proc = run(["--demo", "--image", str(tmp_path / "nope.png")], demo_env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: --image {tmp_path / 'nope.png'}: no such file", proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "starting" not in proc.stdout
    assert not any(Path(demo_env["ANIPORTRAIT_DEMO_MODELS"]).iterdir())
    proc = run(["--workflow", "aniportrait_stage1", "--video", str(REPO / "example_inputs" / "driving_face.mkv")], demo_env, timeout=60)
    assert proc.returncode == 2 and "has no video input" in proc.stderr


def test_help_installs_and_starts_nothing(tmp_path):
    env = dict(os.environ, ANIPORTRAIT_COMFYUI_DIR=str(tmp_path / "would-install-here"))
    t0 = time.time()
    proc = subprocess.run(["bash", str(REPO / "scripts" / "run_example.sh"), "--help"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--comfyui" in proc.stdout and "--demo" in proc.stdout and "--workflow" in proc.stdout
    assert not (tmp_path / "would-install-here").exists() and "[setup]" not in proc.stderr and time.time() - t0 < 30


def test_safetensors_copies_are_used_under_their_own_names(tmp_path):
    import run_example

    (tmp_path / "aniportrait").mkdir()
    for name in ("audio2mesh.safetensors", "audio2pose.pth", "face_landmarker.task"):
        (tmp_path / "aniportrait" / name).write_bytes(b"x")
    prompt = run_example.load_prompt("aniportrait_stage1")
    names = run_example.find_real_files(run_example.needed_files(prompt), tmp_path, check=False)
    assert names == {"audio2mesh.pt": "audio2mesh.safetensors", "audio2pose.pt": "audio2pose.pth",
                     "face_landmarker.task": "face_landmarker.task"}
    run_example.substitute(prompt, names)
    assert prompt["3"]["inputs"] == {"audio2mesh_name": "audio2mesh.safetensors", "audio2pose_name": "audio2pose.pth"}


def check_demo_output(proc: subprocess.CompletedProcess, output_dir: Path) -> Path:
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert lines[0] == BANNER and lines[-1].startswith(BANNER + ": "), proc.stdout
    video = Path(lines[-1][len(BANNER) + 2:])
    assert video.suffix == ".mp4" and video.is_file() and video.stat().st_size > 0
    assert output_dir in video.parents, f"{video} is not in {output_dir}"
    assert REPO not in video.parents
    first_run = next(i for i, line in enumerate(lines) if line.startswith("running "))
    assert any("log: " in line for line in lines[:first_run]), "the server log path is printed at the start"
    assert re.search(r"step \d+/2, window \d+/\d+ .*ETA", proc.stdout), "sampler progress lines"
    return video


def test_demo_runs_on_the_vendored_comfyui_and_leaves_models_alone(models, demo_env, tmp_path):
    before = snapshot(models)
    work = tmp_path / "work"
    proc = run(["--demo", "--models", str(models), "--work", str(work), *FAST], demo_env)
    check_demo_output(proc, work / "output")
    assert snapshot(models) == before, "the models folder changed"
    demo = Path(demo_env["ANIPORTRAIT_DEMO_MODELS"])
    made = [p.name for p in demo.rglob("*") if p.is_file() and p.suffix != ".yaml"]
    assert len(made) == 9 and all(n.startswith("demo-") for n in made), made
    assert (work / "input" / "aniportrait_reference.png").is_file()


def copy_comfyui(dst: Path) -> Path:
    src = comfy_dir() / "ComfyUI"
    assert (src / "main.py").is_file(), f"no vendored ComfyUI at {src}: scripts/setup_env.sh installs it"
    skip = {"custom_nodes", "models", "input", "output", "temp", "user", "__pycache__", ".git"}
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n in skip] if Path(d) == src else
                    [n for n in names if n == "__pycache__"])
    (dst / "custom_nodes").mkdir()
    (dst / "models").mkdir()
    return dst


def test_demo_runs_on_an_existing_comfyui(demo_env, tmp_path):
    root = copy_comfyui(tmp_path / "ComfyUI")
    (root / "input").mkdir()
    (root / "input" / "aniportrait_reference.png").write_bytes(b"the user's own file")
    env = dict(demo_env, ANIPORTRAIT_COMFYUI=str(root))
    venv_python = str(comfy_dir() / "venv" / "bin" / "python")
    proc = run(["--python", venv_python, "--demo", *FAST], env)
    video = check_demo_output(proc, root / "output")
    link = root / "custom_nodes" / "aniportrait"
    assert link.is_symlink() and link.resolve() == REPO
    assert (root / "input" / "aniportrait_reference.png").read_bytes() == b"the user's own file", "user input overwritten"
    assert len(list((root / "input").glob("aniportrait_reference_*.png"))) == 1
    assert not any((root / "models").iterdir()), "nothing may be written into the models folder"
    assert video.is_file()


def test_ctrl_c_stops_the_server_with_one_message(models, demo_env, tmp_path):
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--demo", "--models", str(models), "--work", str(tmp_path / "w"),
                             "--size", "64", "--steps", "25"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=demo_env,
                            # a shell's background job (e.g. `pytest ... &`) starts with Ctrl-C ignored, and children
                            # inherit that: give the script the default Ctrl-C a user's terminal gives it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    port = None
    deadline = time.time() + 300
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r"port (\d+)", line)
        port = int(m.group(1)) if m else port
        if "AniPortraitSampler" in line or time.time() > deadline:
            break
    assert port is not None, "".join(lines)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + out + err
    assert "Traceback" not in err and err.strip() == "interrupted: stopping ComfyUI", err
    import requests

    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=5)


# ----------------------------------------------------------------------------- before the install
@pytest.mark.parametrize("args, code, first_line", [
    (["--image", "{tmp}/nope.png"], 2, "error: --image {tmp}/nope.png: no such file"),
    (["--workflow", "nope"], 2, "error: argument --workflow: invalid choice: 'nope' (choose from "),
    (["--size", "100"], 2, "error: --size 100: use a multiple of 8 from 64 up (e.g. 512)"),
    (["--workflow", "aniportrait_dubbing", "--image", str(REPO / "example_inputs" / "aniportrait_photo.png")], 2,
     "error: --image: the workflow aniportrait_dubbing has no image input"),
    (["--models", "{tmp}/empty"], 1, "error: 9 model file(s) missing in {tmp}/empty:"),
])
def test_run_example_sh_checks_arguments_and_files_before_the_install(tmp_path, args, code, first_line):
    """Bad arguments (and missing model files) fail at once, before setup_env.sh installs anything."""
    env = dict(os.environ, ANIPORTRAIT_COMFYUI_DIR=str(tmp_path / "would-install-here"))
    env.pop("ANIPORTRAIT_COMFYUI", None)
    env.pop("ANIPORTRAIT_MODELS", None)
    args = [a.format(tmp=tmp_path) for a in args]
    t0 = time.time()
    proc = subprocess.run(["bash", str(REPO / "scripts" / "run_example.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=60)
    elapsed = time.time() - t0
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(first_line.format(tmp=tmp_path)), proc.stderr
    assert code == 1 or len(lines) == 1, proc.stderr  # an argument error is one line; missing files are listed
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "would-install-here").exists() and "[setup]" not in proc.stderr
    assert elapsed < 1.0, f"{elapsed:.2f} s"


# ----------------------------------------------------------------------------- the seven workflows
def test_every_workflow_has_its_example_inputs_and_takes_only_its_own():
    import run_example

    inputs = {}
    for name in run_example.WORKFLOWS:
        prompt = run_example.load_prompt(name)
        inputs[name] = {}
        for node, key, opt in run_example.input_slots(prompt):
            inputs[name][opt] = node["inputs"][key]
            assert (REPO / "example_inputs" / node["inputs"][key]).is_file(), (name, node["inputs"][key])
    assert sorted(run_example.WORKFLOWS) == sorted(p.name[:-len("_api.json")] for p in (REPO / "tests" / "e2e" / "prompts").glob("*_api.json"))
    assert inputs["aniportrait_photo_paste_back"] == {"image": "aniportrait_photo.png", "audio": "aniportrait_speech.wav"}
    assert inputs["aniportrait_dubbing"] == {"video": "dubbing_source.mp4", "audio": "aniportrait_speech.wav"}
    assert inputs["aniportrait_two_speakers"] == {"image": "aniportrait_two_people.png", "audio": "aniportrait_speaker_1.wav",
                                                  "audio2": "aniportrait_speaker_2.wav"}


@pytest.mark.parametrize("workflow, given, refused", [
    ("aniportrait_photo_paste_back", "image", "video"),
    ("aniportrait_dubbing", "video", "image"),
])
def test_photo_paste_back_and_dubbing_arguments(tmp_path, workflow, given, refused):
    import run_example

    mine = tmp_path / "mine.bin"
    mine.write_bytes(b"x")
    args = run_example.parse_args(["--workflow", workflow, f"--{given}", str(mine), "--audio", str(mine)])
    prompt = run_example.load_prompt(workflow)
    run_example.check_args(args, prompt)
    args = run_example.parse_args(["--workflow", workflow, f"--{refused}", str(mine)])
    with pytest.raises(run_example.Fail, match=f"^--{refused}: the workflow {workflow} has no {refused} input$"):
        run_example.check_args(args, prompt)


@pytest.mark.parametrize("workflow, audio2pose", [
    ("aniportrait_pose_template", False), ("aniportrait_dubbing", False), ("aniportrait_reenactment", False),
    ("aniportrait_stage1", True), ("aniportrait_photo_paste_back", True), ("aniportrait_audio2video", True),
])
def test_only_workflows_that_use_audio2pose_ask_for_it(workflow, audio2pose):
    import run_example

    names = [f.name for f in run_example.needed_files(run_example.load_prompt(workflow))]
    assert ("audio2pose.pt" in names) == audio2pose, names


def test_a_checkpoint_with_code_is_named_without_torchs_advice(tmp_path, demo_env):
    """The example sets no logging of its own; the library's text must not hand a user torch's advice to load
    the file with weights_only=False."""
    import pickle

    import torch

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    models = tmp_path / "models"
    (models / "aniportrait").mkdir(parents=True)
    torch.save({"w": torch.zeros(2), "x": RunsCode()}, models / "aniportrait" / "audio2mesh.pt")
    with open(models / "aniportrait" / "audio2pose.pt", "wb") as f:
        pickle.dump({"x": RunsCode()}, f, protocol=4)
    proc = run(["--workflow", "aniportrait_stage1", "--models", str(models)], demo_env, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "aniportrait/audio2mesh.pt: contains code or objects and was refused for your safety" in text
    assert "aniportrait/audio2pose.pt: contains code or objects and was refused for your safety" in text
    for advice in ("weights_only", "trusted source", "safe_globals", "will likely succeed", "Traceback"):
        assert advice not in text, text
    assert not (tmp_path / "ran").exists()


def test_demo_without_network_says_where_to_put_the_landmarker(tmp_path, monkeypatch):
    import run_example
    from model_files import MODEL_FILES

    monkeypatch.setattr(run_example, "landmarker_source", lambda models: "http://127.0.0.1:9/face_landmarker.task")
    landmarker = [f for f in MODEL_FILES if f.name == "face_landmarker.task"]
    with pytest.raises(run_example.Fail, match=r"^the demo needs the real face landmarker and its download failed \(.+\): "
                                               r"put face_landmarker.task from http://127.0.0.1:9/face_landmarker.task in "
                                               + re.escape(str(tmp_path / "models" / "aniportrait"))
                                               + r", or pass --models with a folder that has it$"):
        run_example.make_demo_files(landmarker, tmp_path / "demo", tmp_path / "models")
    assert not any((tmp_path / "demo").rglob("*.task")), "no partial file is left"
