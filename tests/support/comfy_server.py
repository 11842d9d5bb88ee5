"""Start the vendored ComfyUI with this pack and talk to it over HTTP (used by the e2e tests and scripts)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
VENDOR = Path(os.environ.get("ANIPORTRAIT_REFERENCE", REPO_ROOT.parent / "shared" / "reference")).resolve().parent / "vendor"


def comfy_dir() -> Path:
    """Install/cache dir of the vendored ComfyUI (shared with .ci/run)."""
    return Path(os.environ.get("ANIPORTRAIT_COMFYUI_DIR", Path.home() / ".cache" / "aniportrait-ci"))


@dataclass
class ComfyServer:
    url: str
    root: Path
    input_dir: Path
    output_dir: Path
    models_dir: Path
    log: Path
    port: int
    #: the server process when this module started it itself (start_existing); None for start-comfyui.sh servers
    proc: subprocess.Popen | None = None

    def queue(self, prompt: dict, client_id: str = "aniportrait-tests") -> requests.Response:
        return requests.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": client_id}, timeout=60)

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        """Queue ``prompt`` and wait for its history entry (raises on validation errors)."""
        r = self.queue(prompt)
        if r.status_code != 200:
            raise PromptRejected(r.json())
        pid = r.json()["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            h = requests.get(f"{self.url}/history/{pid}", timeout=30).json()
            if pid in h:
                return h[pid]
            time.sleep(0.5)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout} s; log: {self.log}")

    def alive(self) -> bool:
        try:
            return requests.get(f"{self.url}/system_stats", timeout=10).status_code == 200
        except requests.RequestException:
            return False

    def object_info(self) -> dict:
        return requests.get(f"{self.url}/object_info", timeout=60).json()


class PromptRejected(RuntimeError):
    def __init__(self, body: dict):
        super().__init__(json.dumps(body)[:2000])
        self.body = body


def execution_error(history: dict) -> dict | None:
    """The ``execution_error`` message of a finished prompt, or None."""
    for kind, data in history.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it: bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: what start-comfyui.sh / ComfyUI say when the port was taken between free_port() and the server's bind
_PORT_TAKEN = ("already answers on", "address already in use", "errno 98")


def start_server(work: Path, port: int | None = None, models: Path | None = None, attempts: int = 3,
                 front_end_root: Path | None = None) -> ComfyServer:
    """Start ComfyUI with only this pack; input/output under ``work``, models under ``models`` (default
    ``work/models``) through extra_model_paths.yaml (folders aniportrait/, vae/, clip_vision/).

    ``port=None`` (the default) takes a free port, and another one if that was taken before the
    server bound it (up to ``attempts`` tries); a given ``port`` is tried once.
    ``front_end_root`` (a frontend's built ``static`` folder) serves that web frontend instead of
    the pinned comfyui-frontend-package (ComfyUI's ``--front-end-root``).
    """
    work.mkdir(parents=True, exist_ok=True)
    models = Path(models) if models is not None else work / "models"
    (models / "aniportrait").mkdir(parents=True, exist_ok=True)
    inp, out = work / "input", work / "output"
    inp.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    extra = work / "extra_model_paths.yaml"
    extra.write_text(
        "aniportrait_tests:\n"
        f"    base_path: {models}\n"
        "    aniportrait: aniportrait\n"
        "    vae: vae\n"
        "    clip_vision: clip_vision\n"
        "    vae_approx: vae_approx\n"
    )
    tries = 1 if port is not None else max(1, attempts)
    for attempt in range(tries):
        chosen = port if port is not None else free_port()
        cmd = [
            "bash", str(VENDOR / "start-comfyui.sh"), "--dir", str(comfy_dir()), "--port", str(chosen),
            "--pack", f"aniportrait={REPO_ROOT}", "--only-packs", "--strict", "--timeout", "300",
            "--", "--input-directory", str(inp), "--output-directory", str(out),
            "--extra-model-paths-config", str(extra), "--disable-api-nodes",
        ]
        if front_end_root is not None:
            cmd += ["--front-end-root", str(front_end_root)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode == 0:
            env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line and line.startswith("COMFYUI_"))
            return ComfyServer(env["COMFYUI_URL"].rstrip("/"), Path(env["COMFYUI_ROOT"]), inp, out, models,
                               Path(env["COMFYUI_LOG"]), chosen)
        port_taken = any(marker in proc.stderr.lower() for marker in _PORT_TAKEN)
        if not (port_taken and attempt + 1 < tries):
            raise RuntimeError(f"ComfyUI did not start on port {chosen} (exit {proc.returncode}):\n"
                               f"{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}")
    raise AssertionError("unreachable")


def stop_server(server: ComfyServer) -> None:
    if server.proc is not None:
        stop_process(server.proc)
        return
    subprocess.run(["bash", str(VENDOR / "start-comfyui.sh"), "--dir", str(comfy_dir()), "--port", str(server.port), "--stop"],
                   capture_output=True, text=True, timeout=120)


def load_workflow(name: str) -> dict:
    """An API-format prompt of tests/e2e/prompts/ (``aniportrait_stage1_api.json``, ...): the twin of the
    UI workflow of the same base name in workflows/, which the e2e tests queue."""
    return json.loads((REPO_ROOT / "tests" / "e2e" / "prompts" / name).read_text())


def unique_prefix(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def copy_into(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    dst = dst_dir / (name or src.name)
    shutil.copyfile(src, dst)
    return dst


# ------------------------------------------------------------------ an existing ComfyUI install (run_example --comfyui)
def start_existing(root: Path, python: str | os.PathLike, port: int | None = None, cpu: bool = False,
                   extra_model_paths: Path | None = None, log: Path | None = None, timeout: float = 600,
                   extra_args: tuple[str, ...] = ()) -> ComfyServer:
    """Start an existing ComfyUI (``root/main.py``) with its own ``python``, its own models, custom_nodes,
    input and output folders, on 127.0.0.1:``port`` (default: a free one); ``cpu`` adds ``--cpu``;
    ``extra_model_paths`` adds a yaml of extra model folders (the install's own extra_model_paths.yaml is
    read by ComfyUI as always). The server runs in its own session (Ctrl-C in the terminal does not reach
    it); :func:`stop_server` stops it. Waits until ``/object_info`` answers; raises RuntimeError with the
    log's tail if it exits or does not answer within ``timeout`` s."""
    root = Path(root).resolve()
    port = port or free_port()
    log = Path(log) if log is not None else Path(tempfile.gettempdir()) / "aniportrait-example" / f"comfyui-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(python), "main.py", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"]
    if cpu:
        cmd.append("--cpu")
    if extra_model_paths is not None:
        cmd += ["--extra-model-paths-config", str(extra_model_paths)]
    cmd += list(extra_args)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = ComfyServer(f"http://127.0.0.1:{port}", root, root / "input", root / "output", root / "models", log, port, proc)
    deadline = time.time() + timeout
    try:
        while not server.alive():
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited (code {proc.returncode}) before it was ready; log {log}:\n{_tail(log)}")
            if time.time() > deadline:
                raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s; log {log}:\n{_tail(log)}")
            time.sleep(0.5)
    except BaseException:
        stop_process(proc)
        raise
    return server


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM a server process (and its session), SIGKILL after ``grace`` s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait(10)


# ------------------------------------------------------------------------------------- progress over the websocket
def run_with_events(server: ComfyServer, prompt: dict, on_event, timeout: float = 6 * 3600) -> dict:
    """Queue ``prompt`` and call ``on_event(type, data)`` for each JSON message ComfyUI's websocket sends about
    it (``execution_start``, ``executing``, ``progress`` {value, max, node}, ``executed``, ``execution_cached``,
    ``execution_error``, ``execution_interrupted``, ``execution_success``); returns its history entry like
    :meth:`ComfyServer.run` (raises PromptRejected on validation errors). Uses aiohttp (a ComfyUI requirement)."""
    import asyncio

    import aiohttp

    client_id = uuid.uuid4().hex
    ws_url = server.url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}"
    done_types = ("execution_success", "execution_error", "execution_interrupted")

    async def main() -> str:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url, heartbeat=30, max_msg_size=0) as ws:
                r = await asyncio.to_thread(server.queue, prompt, client_id)
                if r.status_code != 200:
                    raise PromptRejected(r.json())
                pid = r.json()["prompt_id"]
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
                        continue  # binary: previews
                    data = json.loads(msg.data)
                    kind, body = data.get("type"), data.get("data") or {}
                    if body.get("prompt_id") not in (None, pid):
                        continue
                    if kind != "status":
                        on_event(kind, body)
                    if kind in done_types or (kind == "executing" and body.get("node") is None
                                               and body.get("prompt_id") == pid):
                        break
                return pid

    async def with_timeout() -> str:
        return await asyncio.wait_for(main(), timeout)

    pid = asyncio.run(with_timeout())
    for _ in range(120):  # the history entry is written right after the last message
        h = requests.get(f"{server.url}/history/{pid}", timeout=30).json()
        if pid in h:
            return h[pid]
        time.sleep(0.5)
    raise TimeoutError(f"prompt {pid} finished but has no history entry; log: {server.log}")
