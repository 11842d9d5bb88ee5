"""Schema pieces the nodes share: the category tree and the inputs that repeat.

Saved workflows store widget values by position and links by input name, so the names, order,
defaults and ranges here stay as they are; a tooltip may change freely.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..aniportrait_lib.face import selection, tracking
from . import comfy_adapter as comfy

ROOT = "AniPortrait"
MODELS = f"{ROOT}/models"
AUDIO = f"{ROOT}/audio"
FACE = f"{ROOT}/face"
MOTION = f"{ROOT}/motion"
VIDEO = f"{ROOT}/video"
COMPOSE = f"{ROOT}/compose"
#: the node menu, in the order a run goes through it (and the nodes are registered)
CATEGORIES = (MODELS, AUDIO, FACE, MOTION, VIDEO, COMPOSE)

CHECKPOINT_EXTENSIONS = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")

ON_MISSING_TOOLTIP = ("Frames where no face is found: interpolate = between the nearest frames with a face (held at the "
                      "ends), hold = repeat the last face, stop = end at the first such frame (the original's behaviour).")
SOURCE_FPS_TOOLTIP = "Frame rate of frames given as an IMAGE batch (a VIDEO brings its own and ignores this)."


def video_size() -> list[io.Int.Input]:
    """``width``, ``height``: the video's size, which every node of one run shares."""
    return [io.Int.Input(name, default=512, min=comfy.MIN_SIZE, max=comfy.MAX_SIZE, step=8,
                         tooltip=f"Video {name} in pixels (multiple of 8); the same on every AniPortrait node of one video.")
            for name in ("width", "height")]


def resize_to_video_size() -> list[io.Int.Input]:
    """Optional ``width``, ``height`` a reference face is made for; 0 keeps the image's own size."""
    return [
        io.Int.Input("width", default=0, min=0, max=comfy.MAX_SIZE, step=8, optional=True,
                     tooltip="0 = the image's own size. Otherwise the video size: the face is made for the image stretched "
                             "to width x height, as the video model stretches the reference, so the landmarks match it."),
        io.Int.Input("height", default=0, min=0, max=comfy.MAX_SIZE, step=8, optional=True, tooltip="See width."),
    ]


def on_missing() -> io.Combo.Input:
    """What face tracking does with frames where no face is found."""
    return io.Combo.Input("on_missing", options=list(tracking.ON_MISSING), default="interpolate", tooltip=ON_MISSING_TOOLTIP)


def source_fps(default: float) -> io.Float.Input:
    """``fps`` of a video the node reads frames from (the defaults differ per node and stay so)."""
    return io.Float.Input("fps", default=default, min=1.0, max=240.0, step=0.01, tooltip=SOURCE_FPS_TOOLTIP)


def video_model() -> io.Model.Input:
    """The AniPortrait MODEL, on every node that takes it."""
    return io.Model.Input("model", tooltip="The AniPortrait MODEL (AniPortrait Load Video Model).")


def vae() -> io.Vae.Input:
    """The SD1.5 VAE that encodes the reference and decodes the video."""
    return io.Vae.Input("vae", tooltip="SD1.5 VAE (sd-vae-ft-mse): the same one for Video Conditioning and for decoding.")


def model_file(name: str, default: str, tooltip: str, extensions: tuple[str, ...] = CHECKPOINT_EXTENSIONS) -> io.Combo.Input:
    """A combo over the files in ``models/aniportrait`` with these extensions."""
    return io.Combo.Input(name, options=comfy.list_model_files(*extensions), default=default,
                          tooltip=f"{tooltip} Put it in ComfyUI/models/aniportrait and press R to refresh.")


def face_choice() -> list[io.Input]:
    """Optional ``which_face``, ``face_index``, ``face_point``: which face when the picture has several people.

    Appended at the END of a node's inputs (saved workflows keep their widget positions); read them with
    ``selection.FaceChoice.from_inputs(which_face, face_index, face_point)``.
    """
    return [
        io.Combo.Input("which_face", options=list(selection.CHOICES), default="largest", optional=True,
                       tooltip="Which face when there are several: largest; index = by position, left to right "
                               "(face_index); nearest = the face at or nearest face_point. Videos follow that person."),
        io.Int.Input("face_index", default=0, min=0, max=selection.MAX_FACES - 1, optional=True,
                     tooltip="With which_face = index: 0 = the leftmost face, 1 = the next one to its right, ... "
                             "(by the centre of each face)."),
        io.String.Input("face_point", default="", optional=True,
                        tooltip="With which_face = nearest: x,y in pixels of the image, e.g. 320,180 (for a video, "
                                "of its first frame with a face)."),
    ]
