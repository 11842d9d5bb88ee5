"""Reading what ComfyUI reports about a finished prompt: a node's UI text, the mp4 a Save Video node wrote,
and the shape of the pack's errors."""
from __future__ import annotations

from pathlib import Path

from support.comfy_server import execution_error
from support.paths import REPO_ROOT


def node_text(history: dict, node: str) -> str:
    """The UI text (``ui.text``) a node showed in a finished prompt, lines joined."""
    return "\n".join(history["outputs"].get(node, {}).get("text", []))


def saved_mp4(server, history: dict, node: str) -> dict:
    """The mp4 a Save Video node wrote: its path, size, frame count, fps, codec and audio stream count."""
    import av

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
