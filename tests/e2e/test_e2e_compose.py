"""End to end: the full-resolution workflows, whole photo / video in, video at the source's size out.

* ``aniportrait_photo_paste_back``: the whole astronaut photo -> Face Crop -> stage 1 (+ Edit Motion, Add Blinks)
  -> sampler -> Paste Back into the photo -> an mp4 at the photo's 512x512 with the speech.
* ``aniportrait_dubbing``: a real clip (``../shared/assets/real/``, turned into an mp4 for core Load Video) + new
  speech -> Align Video To Audio -> Face Crop -> Video Head Motion -> sampler -> Paste Back into the aligned
  frames -> an mp4 at the clip's size with the new speech, one frame per 1/30 s of it.

Tiny random weights (fixture ``stage2_models``); the prompts are shrunk (crops 256, face analysis / pose images /
sampler 64x64, 2 steps, a short clip) and each prompt's run time on this machine is printed.
"""
from __future__ import annotations

import copy
import re
import time
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from support.comfy_server import execution_error, load_workflow, unique_prefix
from support.paths import shared_assets_dir
from support.prompts import node_id
from support.reports import node_text

pytestmark = pytest.mark.e2e

SPEECH = "short_speech.wav"  # "Hi there." (espeak-ng, made by the server fixture)
LONG_SPEECH = "aniportrait_speech.wav"  # 2.4 s (73 frames): the dubbed guitar clip runs through all its frames
CROP = 256  # crops big enough for MediaPipe to track the face in every crop
SIZE = 64  # face analysis, pose images and the sampler
#: (clip, speech): the guitar clip has frames without a face (frames 17, 19 and 20 of the mp4 for MediaPipe in
#: video mode, though that varies with the decoder): the 2.4 s speech loops it through all of them
CLIPS = [("video_wan2_2_14B_s2v-1.webp", LONG_SPEECH), ("api_kling_avatar2-1.webp", SPEECH)]


def webp_to_mp4(src: Path, dst: Path) -> tuple[int, int, int, Fraction]:
    """An animated WebP as an H.264 mp4 at its own frame rate (WebP stores whole-millisecond frame durations,
    33/34 ms -> 30 fps); returns (frames, width, height, fps). example_inputs/dubbing_source.mp4 was made so."""
    im = Image.open(src)
    frames, total_ms = [], 0
    for i in range(im.n_frames):
        im.seek(i)
        im.load()
        frames.append(np.asarray(im.convert("RGB")))
        total_ms += im.info["duration"]
    fps = Fraction(round(1000 * len(frames) / total_ms))
    with av.open(str(dst), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return len(frames), frames[0].shape[1], frames[0].shape[0], fps


def _speech(path: Path) -> tuple[int, float]:
    """(frames at 30 fps the pack's way: ceil of the 16 kHz-resampled length, duration in s) of a wav file."""
    from aniportrait_lib.audio import features

    with wave.open(str(path)) as w:
        rate, n, width, channels = w.getframerate(), w.getnframes(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(n)
    assert width == 2
    samples = np.frombuffer(raw, dtype="<i2").reshape(-1, channels).T.astype(np.float32) / 32768.0
    return features.frame_count(features.to_mono_16k(samples, rate).shape[0], 30.0), n / rate


def _shrink(prompt: dict, prefix: str, speech: str | None = SPEECH) -> dict:
    """The prompt at the tests' small sizes and 2 steps, saving under a fresh ``prefix``; ``speech`` (a file in the
    input folder) replaces every Load Audio's file unless None."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        cls, inputs = node["class_type"], node["inputs"]
        if cls == "AniPortraitFaceCrop":
            inputs["width"] = inputs["height"] = CROP
        elif cls in ("AniPortraitFaceAnalysis", "AniPortraitProjectLandmarks", "AniPortraitVideoConditioning"):
            inputs["width"] = inputs["height"] = SIZE
        if cls == "AniPortraitSampler":
            inputs["steps"] = 2
        elif cls == "LoadAudio" and speech is not None:
            inputs["audio"] = speech
        elif cls == "SaveVideo":
            inputs["filename_prefix"] = unique_prefix(prefix)
    return prompt


def _run_timed(server, prompt: dict, what: str, capsys) -> dict:
    t0 = time.time()
    history = server.run(prompt, timeout=1200)
    took = time.time() - t0
    with capsys.disabled():
        print(f"\n[compose] {what}: {took:.1f} s on this machine")
    err = execution_error(history)
    assert err is None, err and (err.get("node_type"), err.get("exception_message"), err.get("traceback"))
    return history


def _check_mp4(server, history: dict, save: str, size: tuple[int, int], frames: int, audio_s: float,
               fps: float = 30.0) -> Path:
    video = history["outputs"][save]["images"][0]
    path = server.output_dir / video["subfolder"] / video["filename"]
    assert path.suffix == ".mp4" and path.stat().st_size > 0
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        assert (vstream.codec_context.width, vstream.codec_context.height) == size
        assert abs(float(vstream.average_rate) - fps) < 1e-6
        assert len(container.streams.audio) == 1, "the mp4 must carry the audio track"
        astream = container.streams.audio[0]
        got = sum(1 for _ in container.decode(vstream))
        container.seek(0)
        samples = sum(f.samples for f in container.decode(astream))
        audio_got = samples / astream.rate
    assert got == frames, f"{got} video frames, want {frames} (the audio at {fps:g} fps)"
    assert abs(audio_got - audio_s) < 0.1, f"audio track {audio_got:.3f} s, the speech is {audio_s:.3f} s"
    return path


def test_photo_paste_back_makes_a_video_at_the_photos_size(stage2_models, capsys):
    from skimage import data

    server = stage2_models
    Image.fromarray(data.astronaut()).save(server.input_dir / "aniportrait_photo.png")  # the whole 512x512 photo
    prompt = _shrink(load_workflow("aniportrait_photo_paste_back_api.json"), "aniportrait/photo_video")
    assert prompt[node_id(prompt, "LoadImage")]["inputs"]["image"] == "aniportrait_photo.png"
    history = _run_timed(server, prompt, "aniportrait_photo_paste_back (whole photo, 'Hi there.')", capsys)
    frames, seconds = _speech(server.input_dir / SPEECH)
    assert f"-> {frames} frames at 30 fps" in node_text(history, node_id(prompt, "AniPortraitAudioFeatures"))
    assert "blinks of" in node_text(history, node_id(prompt, "AniPortraitAddBlinks"))
    _check_mp4(server, history, node_id(prompt, "SaveVideo"), (512, 512), frames, seconds)


@pytest.mark.parametrize(("clip", "speech"), CLIPS, ids=["guitar_face_less_frames", "avatar"])
def test_dubbing_makes_a_video_at_the_sources_size_with_the_new_speech(stage2_models, capsys, clip, speech):
    server = stage2_models
    n_src, width, height, fps = webp_to_mp4(shared_assets_dir() / "real" / clip, server.input_dir / "dubbing_source.mp4")
    prompt = _shrink(load_workflow("aniportrait_dubbing_api.json"), "aniportrait/dubbed_video", speech)
    assert prompt[node_id(prompt, "LoadVideo")]["inputs"]["file"] == "dubbing_source.mp4"
    history = _run_timed(server, prompt, f"aniportrait_dubbing ({clip}: {n_src} frames {width}x{height} at {fps} fps, "
                                         f"{speech})", capsys)
    frames, seconds = _speech(server.input_dir / speech)
    align = node_text(history, node_id(prompt, "AniPortraitAlignVideoToAudio"))
    assert f"{n_src} frames at {float(fps):g} fps -> {frames} frames at 30 fps" in align, align
    crop_text = node_text(history, node_id(prompt, "AniPortraitFaceCrop"))
    motion_text = node_text(history, node_id(prompt, "AniPortraitVideoHeadMotion"))
    # Face Crop tracks each source frame the speech's timeline shows once; Video Head Motion reports per timeline frame
    from aniportrait_lib.motion.dubbing import source_frame_indices

    shown = len(np.unique(source_frame_indices(n_src, float(fps), frames, 30.0, "loop")))
    assert f"of {shown} frames" in crop_text, crop_text
    assert f"of {frames} frames" in motion_text, motion_text
    found, total = (int(x) for x in re.search(r"face found in (\d+) of (\d+) frames", crop_text).groups())
    # the guitar clip has face-less frames, but after its H.264 round trip MediaPipe finds a face in some of them
    # on some runs (72 and 73 of 73 both seen); the e2e check is that every frame without one is filled in and
    # said so (the fill itself is tested deterministically on the clip's own frames in tests/lib and tests/nodes)
    assert found == total or f"{total - found} filled in" in crop_text, crop_text
    with capsys.disabled():
        print(f"[compose]   Face Crop: {crop_text!r}; Video Head Motion: {motion_text!r}")
    source_frames = round(frames * float(fps) / 30.0)  # the speech's 30 fps timeline written back at the source's rate
    _check_mp4(server, history, node_id(prompt, "SaveVideo"), (width, height), source_frames, seconds, float(fps))


def panning_720p_clip(src: Path, dst: Path, num_frames: int = 50, fps: int = 25) -> np.ndarray:
    """A 1280x720 clip at ``fps``: a real portrait clip (scaled to 600x600, centred) over a photo background that
    pans 6 px per frame (camera motion: a repeated or dropped background frame shows). Returns its frames as
    decoded back from the file, ``(num_frames, 720, 1280, 3)`` uint8."""
    from skimage import data

    im = Image.open(src)
    faces = []
    for i in range(min(im.n_frames, num_frames)):
        im.seek(i)
        faces.append(np.asarray(im.convert("RGB").resize((600, 600), Image.BICUBIC)))
    wide = np.asarray(Image.fromarray(data.coffee()).resize((1280 + 6 * num_frames, 720), Image.BICUBIC))
    with av.open(str(dst), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "16"})
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for t in range(num_frames):
            frame = wide[:, 6 * t:6 * t + 1280].copy()
            frame[60:660, 340:940] = faces[t % len(faces)]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(dst)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_dubbing_a_25_fps_720p_video_keeps_its_frames_and_rate(stage2_models, capsys):
    """Every background frame once and in order at the source's 25 fps: the output's frame j matches source frame
    j outside the face (and not its neighbours, which the 6 px pan makes differ), for the trimmed length."""
    server = stage2_models
    source = panning_720p_clip(shared_assets_dir() / "real" / "api_kling_avatar2-1.webp",
                               server.input_dir / "dubbing_source.mp4")
    prompt = _shrink(load_workflow("aniportrait_dubbing_api.json"), "aniportrait/dubbed_720p", LONG_SPEECH)
    prompt[node_id(prompt, "AniPortraitAlignVideoToAudio")]["inputs"]["length_rule"] = "trim"
    history = _run_timed(server, prompt, "aniportrait_dubbing (50 frames 1280x720 at 25 fps, trimmed)", capsys)
    seconds = len(source) / 25.0
    path = _check_mp4(server, history, node_id(prompt, "SaveVideo"), (1280, 720), len(source), seconds, 25.0)
    with av.open(str(path)) as container:
        out = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.int16)
    background = np.r_[0:300, 980:1280]  # left and right of the 600 px portrait: never inside the paste mask
    same = [np.abs(out[j][:, background] - source[j][:, background]).mean() for j in range(len(source))]
    nearest = [min(np.abs(out[j][:, background] - source[k][:, background]).mean()
                   for k in (j - 1, j + 1) if 0 <= k < len(source)) for j in range(len(source))]
    assert max(same) < 2.0, f"background differs from the source by {max(same):.2f} levels (codec error is < 2)"
    assert all(s < 0.5 * n for s, n in zip(same, nearest)), "an output frame matches a neighbouring source frame better"


def test_two_speakers_are_both_animated_in_turn_in_one_picture(stage2_models, capsys):
    """The two-speaker workflow on its example picture and tracks: each face is pasted back (both face boxes change),
    each Audio2Mesh rests the mouth while the other person speaks, and the video carries both tracks."""
    import shutil

    from aniportrait_lib.face.landmarker import FaceLandmarker
    from support.paths import REPO_ROOT

    server = stage2_models
    for name in ("aniportrait_two_people.png", "aniportrait_speaker_1.wav", "aniportrait_speaker_2.wav"):
        shutil.copyfile(REPO_ROOT / "example_inputs" / name, server.input_dir / name)
    prompt = _shrink(load_workflow("aniportrait_two_speakers_api.json"), "aniportrait/two_speakers", speech=None)
    history = _run_timed(server, prompt, "aniportrait_two_speakers (350x350 picture, two 4.1 s tracks)", capsys)
    frames, seconds = _speech(server.input_dir / "aniportrait_speaker_1.wav")
    path = _check_mp4(server, history, node_id(prompt, "SaveVideo"), (350, 350), frames, seconds)
    rests = {}
    for crop in (n for n, spec in prompt.items() if spec["class_type"] == "AniPortraitFaceCrop"):
        mesh = next(n for n, spec in prompt.items() if spec["class_type"] == "AniPortraitAudio2Mesh"
                    and prompt[spec["inputs"]["face"][0]]["inputs"]["image"] == [crop, 0])
        text = node_text(history, mesh)
        match = re.search(r"mouth at rest in \d+ pauses?: ([\d.]+) s of ([\d.]+) s", text)
        assert match, text
        rests[prompt[crop]["inputs"]["face_index"]] = float(match.group(1))
    with capsys.disabled():
        print(f"[compose]   seconds at rest: left person {rests[0]:.2f}, right person {rests[1]:.2f}")
    # the left person speaks 0-2.0 s and rests while the right one speaks (2.4-3.8 s), and the other way round
    assert rests[0] >= 1.5 and rests[1] >= 2.0
    picture = np.asarray(Image.open(server.input_dir / "aniportrait_two_people.png").convert("RGB")).astype(np.int16)
    with av.open(str(path)) as container:
        middle = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][frames // 2].astype(np.int16)
    landmarker = FaceLandmarker(server.models_dir / "aniportrait" / "face_landmarker.task")
    faces = landmarker.detect(picture.astype(np.uint8))
    assert len(faces) == 2
    for face in faces:  # each face box holds generated pixels (random weights: far from the picture)
        (x0, y0), (x1, y1) = face.landmarks_px()[:468].min(0).astype(int), face.landmarks_px()[:468].max(0).astype(int)
        assert np.abs(middle[y0:y1, x0:x1] - picture[y0:y1, x0:x1]).mean() > 10.0
