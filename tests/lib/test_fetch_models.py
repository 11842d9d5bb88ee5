"""scripts/fetch_models.py and the model-file catalogue: offline checks, --check output, never overwriting."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from support import random_weights
from model_files import MODEL_FILES, check_file, check_shapes, layout_digest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "fetch_models.py"
BY_NAME = {f.name: f for f in MODEL_FILES}


def _load_script():
    spec = importlib.util.spec_from_file_location("fetch_models_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Custom:
    """An object a weights-only load refuses."""


def full_size_layouts() -> dict[str, dict[str, tuple[int, ...]]]:
    """Key -> shape of the six release files, from this pack's own full-size models built on the meta device."""
    from aniportrait_lib.audio import models
    from aniportrait_lib.networks import config, pose_guider, unet

    shapes = lambda sd: {k: tuple(v.shape) for k, v in sd.items()}  # noqa: E731
    cfg = config.sd15_unet_config()
    video = shapes(unet.build_video_unet(cfg, device="meta").state_dict())
    return {
        "audio2mesh.pt": shapes(models.release_state_dict(
            models.build_audio2mesh(models.Audio2MeshConfig(wav2vec={}, latent_dim=512), device="meta"))),
        "audio2pose.pt": shapes(models.release_state_dict(
            models.build_audio2pose(models.Audio2PoseConfig(wav2vec={}, latent_dim=512), device="meta"))),
        "reference_unet.pth": shapes(unet.build_reference_unet(cfg, device="meta").state_dict()),
        "denoising_unet.pth": {k: v for k, v in video.items() if not unet.is_motion_key(k)},
        "motion_module.pth": {k: v for k, v in video.items() if unet.is_motion_key(k)},
        "pose_guider.pth": shapes(pose_guider.build_pose_guider(noise_latent_channels=320, device="meta").state_dict()),
    }


def save_layout(shapes, path: Path) -> Path:
    """A tiny .pt with exactly ``shapes``: every tensor is a stride-0 view of one shared element."""
    base = torch.zeros(1, dtype=torch.float16)
    torch.save({k: base.expand(s) if len(s) else base.view(()) for k, s in shapes.items()}, path)
    return path


@pytest.fixture(scope="module")
def layouts():
    return full_size_layouts()


# ---------------------------------------------------------------------------------------------------- digests
def test_shipped_digests_match_the_full_size_models(layouts):
    for name, shapes in layouts.items():
        assert layout_digest(shapes) == BY_NAME[name].digest, name


def test_shipped_digests_match_the_reference_manifests():
    from support.golden import manifest

    manifest_of = {"denoising_unet.pth": "denoising_unet_without_motion_modules"}
    for entry in MODEL_FILES[:6]:
        m = manifest(manifest_of.get(entry.name, Path(entry.name).stem))
        assert layout_digest(m) == entry.digest, entry.name
        n_el = sum(int(torch.tensor(s).prod()) if s else 1 for s in m.values())
        assert entry.approx_bytes == 4 * n_el, entry.name  # sizes: element counts x fp32


def test_digest_ignores_weight_norm_naming_and_order():
    sd = {"b": (2, 3), "audio_encoder.encoder.pos_conv_embed.conv.parametrizations.weight.original0": (1, 1, 4)}
    release = {"audio_encoder.encoder.pos_conv_embed.conv.weight_g": (1, 1, 4), "b": (2, 3)}
    assert layout_digest(sd) == layout_digest(release)
    assert layout_digest({"b": (3, 2)}) != layout_digest({"b": (2, 3)})
    assert layout_digest({"s": ()}).keys == 1


# ------------------------------------------------------------------------------------------ checks on small files
def test_check_small_files_with_their_digest(tmp_path):
    """The check logic on real (small) files: the expected digest is passed in, as for the released ones."""
    entry = BY_NAME["audio2mesh.pt"]
    small = random_weights.audio2mesh_state_dict(0)
    digest = layout_digest({k: v.shape for k, v in small.items()})
    good = tmp_path / "good" / "audio2mesh.pt"
    good.parent.mkdir()
    torch.save(small, good)
    assert check_file(entry, good, digest).ok
    assert check_file(entry, good).status == "wrong"  # small model != released layout
    st = tmp_path / "good" / "audio2mesh.safetensors"
    save_file(small, str(st))
    assert check_file(entry, st, digest).ok

    cut = tmp_path / "audio2mesh.pt"
    cut.write_bytes(good.read_bytes()[:-100])
    r = check_file(entry, cut, digest)
    assert (r.status, r.detail) == ("truncated", "truncated or not a checkpoint: download it again")

    wrong = tmp_path / "wrong" / "audio2mesh.pt"
    wrong.parent.mkdir()
    torch.save(random_weights.audio2pose_state_dict(1), wrong)
    r = check_file(entry, wrong, digest)
    assert (r.status, r.detail) == ("wrong", "expected audio2mesh.pt (Audio2Mesh), this is audio2pose.pt (Audio2Pose)")

    evil = tmp_path / "evil" / "audio2mesh.pt"
    evil.parent.mkdir()
    torch.save({"x": torch.zeros(1), "o": Custom()}, evil)
    assert check_file(entry, evil, digest).status == "unsafe"
    r = check_file(entry, tmp_path / "nowhere" / "audio2mesh.pt")
    assert r.status == "missing" and "huggingface.co/ZJYang/AniPortrait" in r.detail and "MB" in r.detail


def test_vae_and_clip_layout_checks(tmp_path):
    vae, clip = BY_NAME["sd-vae-ft-mse.safetensors"], BY_NAME["sd-image-variations-image-encoder.safetensors"]
    good_vae = dict(vae.required_shapes) | {"encoder.down_blocks.0.resnets.0.conv1.weight": (128, 128, 3, 3),
                                            "decoder.up_blocks.0.resnets.0.conv1.weight": (512, 512, 3, 3)}
    assert check_shapes(vae, good_vae).ok
    sd3 = dict(good_vae) | {"post_quant_conv.weight": (16, 16, 1, 1), "decoder.conv_in.weight": (512, 16, 3, 3)}
    r = check_shapes(vae, sd3)
    assert r.status == "wrong" and "post_quant_conv.weight is [16, 16, 1, 1], not [4, 4, 1, 1]" in r.detail
    good_clip = dict(clip.required_shapes)
    assert check_shapes(clip, good_clip).ok
    clip_h = good_clip | {"visual_projection.weight": (1024, 1280)}
    assert "visual_projection.weight is [1024, 1280], not [768, 1024]" in check_shapes(clip, clip_h).detail
    r = check_shapes(clip, good_vae)
    assert (r.status, r.detail) == ("wrong", f"expected {clip.name} ({clip.what}), this is a Stable Diffusion VAE")
    # a real safetensors file, read through its header only
    path = tmp_path / "vae.safetensors"
    save_file({k: torch.zeros(s, dtype=torch.float16) for k, s in good_vae.items()}, str(path))
    assert check_file(vae, path).ok


def _task(path: Path, members) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for m in members:
            zf.writestr(m, b"x" * 1000)
    return path


def test_task_checks(tmp_path):
    from aniportrait_lib.face.landmarker import _TASK_MEMBERS

    entry = BY_NAME["face_landmarker.task"]
    good = _task(tmp_path / "good.task", _TASK_MEMBERS)
    assert check_file(entry, good).ok
    partial = _task(tmp_path / "partial.task", _TASK_MEMBERS[:1])
    r = check_file(entry, partial)
    assert r.status == "wrong" and _TASK_MEMBERS[1] in r.detail
    cut = tmp_path / "cut.task"
    cut.write_bytes(good.read_bytes()[:-30])
    assert check_file(entry, cut).status == "truncated"


# ---------------------------------------------------------------------------------------------------- the script
def test_help_downloads_nothing(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=60)
    assert out.returncode == 0 and "--check" in out.stdout and "--only" in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_check_output_good_truncated_wrong(tmp_path, layouts):
    models = tmp_path / "models"
    folder = models / "aniportrait"
    folder.mkdir(parents=True)
    save_layout(layouts["audio2mesh.pt"], folder / "audio2mesh.pt")
    good_pg = save_layout(layouts["pose_guider.pth"], tmp_path / "pose_guider.pth")
    (folder / "pose_guider.pth").write_bytes(good_pg.read_bytes()[: good_pg.stat().st_size // 2])
    save_layout(layouts["audio2pose.pt"], folder / "reference_unet.pth")  # another model's file
    out = subprocess.run([sys.executable, str(SCRIPT), "--check", "--only", "aniportrait", "--models", str(models)],
                         capture_output=True, text=True, timeout=300)
    print(out.stdout, out.stderr)
    assert out.returncode == 1
    hf = "https://huggingface.co/ZJYang/AniPortrait/resolve/main"
    assert out.stdout.splitlines() == [
        f"models folder: {models.resolve()} (given with --models)",
        "OK         aniportrait/audio2mesh.pt",
        f"missing    aniportrait/audio2pose.pt: 481.5 MB (approx.) from {hf}/audio2pose.pt",
        "wrong file aniportrait/reference_unet.pth: expected reference_unet.pth (ReferenceNet), "
        "this is audio2pose.pt (Audio2Pose)",
        f"missing    aniportrait/denoising_unet.pth: 3.4 GB (approx.) from {hf}/denoising_unet.pth",
        f"missing    aniportrait/motion_module.pth: 1.8 GB (approx.) from {hf}/motion_module.pth",
        "truncated  aniportrait/pose_guider.pth: truncated or not a checkpoint: download it again",
        "5 of 6 file(s) missing or bad.",
    ]


def test_check_all_good_exits_zero(tmp_path, layouts):
    from aniportrait_lib.face.landmarker import _TASK_MEMBERS

    folder = tmp_path / "aniportrait"
    folder.mkdir()
    for name, shapes in layouts.items():
        save_layout(shapes, folder / name)
    _task(folder / "face_landmarker.task", _TASK_MEMBERS)
    script = _load_script()
    assert script.main(["--check", "--only", "aniportrait", "--only", "landmarker", "--models", str(tmp_path)]) == 0


def test_download_never_overwrites_an_existing_file(tmp_path, monkeypatch, capsys):
    from aniportrait_lib.face.landmarker import _TASK_MEMBERS

    script = _load_script()
    calls = []

    def fake_download(entry, work_dir):
        calls.append(entry.name)
        return _task(Path(work_dir) / entry.name, _TASK_MEMBERS)

    monkeypatch.setattr(script, "download", fake_download)
    target = tmp_path / "aniportrait" / "face_landmarker.task"
    target.parent.mkdir()
    target.write_bytes(b"my own file")
    assert script.main(["--only", "landmarker", "--models", str(tmp_path)]) == 1
    assert calls == [] and target.read_bytes() == b"my own file"
    assert "left untouched" in capsys.readouterr().out

    # missing: downloaded into place, temporary folder removed
    target.unlink()
    assert script.main(["--only", "landmarker", "--models", str(tmp_path)]) == 0
    assert calls == ["face_landmarker.task"] and check_file(BY_NAME["face_landmarker.task"], target).ok
    assert sorted(p.name for p in target.parent.iterdir()) == ["face_landmarker.task"]
    # present and good: checked, not downloaded again
    assert script.main(["--only", "landmarker", "--models", str(tmp_path)]) == 0
    assert calls == ["face_landmarker.task"]


def test_file_appearing_during_download_is_kept(tmp_path, monkeypatch, capsys):
    from aniportrait_lib.face.landmarker import _TASK_MEMBERS

    script = _load_script()
    target = tmp_path / "aniportrait" / "face_landmarker.task"

    def racing_download(entry, work_dir):
        _task(target, _TASK_MEMBERS)  # someone else's complete file appears meanwhile
        return _task(Path(work_dir) / entry.name, list(_TASK_MEMBERS) + ["extra"])

    monkeypatch.setattr(script, "download", racing_download)
    (tmp_path / "aniportrait").mkdir()
    assert script.main(["--only", "landmarker", "--models", str(tmp_path)]) == 0
    with zipfile.ZipFile(target) as zf:
        assert "extra" not in zf.namelist()
    assert "not overwritten" in capsys.readouterr().out
    assert sorted(p.name for p in target.parent.iterdir()) == ["face_landmarker.task"]


def test_bad_download_is_discarded(tmp_path, monkeypatch, capsys):
    script = _load_script()

    def junk(entry, work_dir):
        p = Path(work_dir) / entry.name
        p.write_bytes(b"<html>rate limited</html>")
        return p

    monkeypatch.setattr(script, "download", junk)
    assert script.main(["--only", "vae", "--models", str(tmp_path)]) == 1
    assert list((tmp_path / "vae").iterdir()) == []
    assert "discarded" in capsys.readouterr().out


def test_default_models_dir_is_the_examples_too(tmp_path, monkeypatch, capsys):
    import model_files
    import run_example

    monkeypatch.delenv("ANIPORTRAIT_MODELS", raising=False)
    monkeypatch.setattr(model_files, "PACK_ROOT", tmp_path / "ComfyUI" / "custom_nodes" / "aniportrait")
    assert model_files.default_models_dir()[0] == tmp_path / "ComfyUI" / "models"
    monkeypatch.setattr(model_files, "PACK_ROOT", tmp_path / "somewhere" / "aniportrait")
    assert model_files.default_models_dir()[0] == Path.home() / "aniportrait-models"
    monkeypatch.setenv("ANIPORTRAIT_MODELS", str(tmp_path / "mine"))
    assert model_files.default_models_dir()[0] == tmp_path / "mine"
    # both scripts take that folder when --models is not given, and both --help texts say so
    assert run_example.models_folder(run_example.parse_args([])) == tmp_path / "mine"
    script = _load_script()
    monkeypatch.setattr(script, "fetch_one", lambda entry, models: print(f"into {models}") or True)
    assert script.main(["--only", "vae"]) == 0
    assert f"into {tmp_path / 'mine'}" in capsys.readouterr().out
    for main in (script.main, run_example.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "".join(capsys.readouterr().out.split()).count("".join(model_files.DEFAULT_MODELS_HELP.split())) == 1


BLOCK_TORCH = """
import runpy, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
sys.argv = [sys.argv[1]] + sys.argv[2:]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])  # as `python scripts/fetch_models.py` has it
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _expected_without_torch(python: str, missing: str, what: str = "check") -> str:
    return (f"error: {python} lacks {missing}, which this script needs to {what} the files: run it with your "
            f"ComfyUI's Python (e.g. ComfyUI/venv/bin/python {SCRIPT}), or install them: {python} -m pip install {missing}")


@pytest.mark.parametrize("check", [True, False])
def test_without_torch_one_sentence_says_what_to_run_it_with(tmp_path, check):
    """A Python without torch (here: the test's own, with torch blocked) gets one line, no traceback, nothing written."""
    args = ["--models", str(tmp_path / "models")] + (["--check"] if check else [])
    proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == _expected_without_torch(sys.executable, "torch", "check" if check else "download and check")
    assert proc.stdout == "" and not (tmp_path / "models").exists()


def _python_without_torch() -> str | None:
    import shutil

    for candidate in ("/usr/bin/python3", shutil.which("python3"), shutil.which("python")):
        if candidate and Path(candidate).is_file() and subprocess.run(
                [candidate, "-c", "import sys; assert sys.version_info >= (3, 8); import torch"],
                capture_output=True, timeout=60).returncode != 0:
            return candidate
    return None


def test_a_python_without_torch_gets_one_sentence_and_help_works(tmp_path):
    python = _python_without_torch()
    if python is None:
        pytest.skip("every Python on this machine has torch")
    proc = subprocess.run([python, str(SCRIPT), "--check", "--models", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {python} lacks torch") and "ComfyUI's Python" in lines[0]
    proc = subprocess.run([python, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--models" in proc.stdout, proc.stderr
