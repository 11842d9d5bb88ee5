"""Audio nodes: a core AUDIO clip -> features -> face motion (Audio2Mesh) and head poses (Audio2Pose)."""
from __future__ import annotations

from comfy_api.latest import io

from ..aniportrait_lib.motion import build as motion_steps
from ..aniportrait_lib.motion import rest
from ..aniportrait_lib.audio import features, inference, pauses
from ..aniportrait_lib.audio import models as audio_models
from ..aniportrait_lib.face import pose_math
from . import comfy_adapter as comfy
from . import schema, sockets


class AudioFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitAudioFeatures",
            display_name="AniPortrait Audio Features (prepare speech)",
            category=schema.AUDIO,
            description="Prepares a core AUDIO clip for AniPortrait's wav2vec2 encoders: mono, 16 kHz, whole-clip normalisation, frame count at the video fps.",
            inputs=[
                io.Audio.Input("audio", tooltip="Speech (the first clip of a batch is used)."),
                io.Float.Input("fps", default=30.0, min=1.0, max=60.0, step=1.0,
                               tooltip="Video frame rate. The released models were trained at 30 fps."),
            ],
            outputs=[sockets.AudioFeatures.Output("audio_features")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, audio, fps) -> io.NodeOutput:
        waveform = audio["waveform"]
        batch_note = f"the audio input holds {waveform.shape[0]} clips; only the first one is used." if waveform.ndim == 3 and waveform.shape[0] > 1 else None
        result = features.audio_features(waveform, int(audio["sample_rate"]), fps)
        return comfy.output(result, notes=[batch_note, f"{result.duration:.2f} s of audio -> {result.num_frames} frames at {fps:g} fps"])


class Audio2Mesh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitAudio2Mesh",
            display_name="AniPortrait Audio2Mesh (speech to face)",
            category=schema.AUDIO,
            description="Predicts the per-frame 3D face mesh (lip and expression motion) from audio; head pose starts neutral. "
                        "In pauses of the speech the face eases to the reference's own shape (the mouth at rest).",
            inputs=[
                sockets.Audio2MeshModel.Input("audio2mesh"), sockets.AudioFeatures.Input("audio_features"), sockets.Face.Input("face"),
                io.Float.Input("whole_clip_seconds", default=inference.WHOLE_CLIP_SECONDS, min=0.0, max=3600.0, step=1.0, optional=True,
                               tooltip="Clips up to this long are encoded in one pass, as the original. Longer clips are encoded in "
                                       f"{inference.WINDOW_SECONDS:g} s windows ({inference.OVERLAP_SECONDS:g} s cross-faded overlap), "
                                       "so memory stays flat however long the clip (results differ slightly from one pass)."),
                io.Boolean.Input("rest_in_pauses", default=True, optional=True,
                                 tooltip="Ease the face to the reference's own shape (mouth at rest) in pauses of the speech. "
                                         "Frames outside the pauses are not changed."),
                io.Float.Input("pause_threshold_db", default=pauses.DEFAULT_THRESHOLD_DB, min=-80.0, max=-1.0, step=1.0, optional=True,
                               tooltip="A pause starts where the audio is this many dB below the speech level (the level of the "
                                       f"loudest 5% of frames) and ends once it is back {pauses.HYSTERESIS_DB:g} dB above the threshold. Lower (e.g. -40) for "
                                       "quiet speech; higher (e.g. -20) for noisy recordings."),
                io.Float.Input("min_pause_seconds", default=pauses.DEFAULT_MIN_PAUSE_SECONDS, min=0.0, max=10.0, step=0.05, optional=True,
                               tooltip="Shorter quiet stretches (the gaps between words) are left as Audio2Mesh made them."),
                io.Float.Input("rest_ease_seconds", default=rest.DEFAULT_EASE_SECONDS, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="Cosine ease into and out of rest, inside the pause (0 = a cut)."),
            ],
            outputs=[sockets.Motion.Output("motion")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, audio2mesh, audio_features, face, whole_clip_seconds=inference.WHOLE_CLIP_SECONDS, rest_in_pauses=True,
                pause_threshold_db=pauses.DEFAULT_THRESHOLD_DB, min_pause_seconds=pauses.DEFAULT_MIN_PAUSE_SECONDS,
                rest_ease_seconds=rest.DEFAULT_EASE_SECONDS) -> io.NodeOutput:
        comfy.check_memory("audio2mesh", seconds=audio_features.duration, model=audio2mesh, whole_clip_seconds=whole_clip_seconds)
        device = comfy.load_for_inference(audio2mesh)
        offsets = inference.predict_mesh_offsets(audio2mesh.model, audio_features, device, whole_clip_seconds=whole_clip_seconds)
        note = None
        if rest_in_pauses:
            offsets, found = rest.rest_in_pauses(offsets, audio_features, pause_threshold_db, min_pause_seconds, rest_ease_seconds)
            seconds = sum(end - start for start, end in found) / audio_features.fps
            note = (f"mouth at rest in {len(found)} pause{'' if len(found) == 1 else 's'}: {seconds:.2f} s of "
                    f"{audio_features.num_frames / audio_features.fps:.2f} s" if found else
                    f"no pause of {min_pause_seconds:g} s or more ({pause_threshold_db:g} dB below the speech): the mouth moves throughout")
        return comfy.output(motion_steps.motion_from_mesh_offsets(offsets, face, audio_features.fps), notes=[note])


class Audio2Pose(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitAudio2Pose",
            display_name="AniPortrait Audio2Pose (speech to head)",
            category=schema.AUDIO,
            description="Predicts head motion from audio (autoregressive), then halves rotations and smooths like the original.",
            inputs=[
                sockets.Audio2PoseModel.Input("audio2pose"),
                sockets.AudioFeatures.Input("audio_features"),
                sockets.Motion.Input("motion"),
                io.Int.Input("style_id", default=inference.DEFAULT_STYLE_ID, min=0, max=audio_models.NUM_STYLE_IDS - 1,
                             tooltip="Speaking style (0-99); the original picks one at random on every run."),
                io.Int.Input("smoothing_window", default=pose_math.SMOOTHING_WINDOW, min=1, max=61,
                             tooltip="Moving-average window in frames (1 = no smoothing). Larger = calmer head."),
                io.Float.Input("rotation_scale", default=pose_math.ROTATION_SCALE, min=0.0, max=2.0, step=0.05,
                               tooltip="Scales predicted head rotations (the original uses 0.5)."),
            ],
            outputs=[sockets.Motion.Output("posed_motion", display_name="motion")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, audio2pose, audio_features, motion, style_id, smoothing_window, rotation_scale) -> io.NodeOutput:
        if audio2pose is None:
            raise ValueError("no Audio2Pose model came in: AniPortrait Load Audio Models has audio2pose_name 'none'; "
                             "pick audio2pose.pt there")
        inference.check_same_clip(motion.num_frames, audio_features)
        device = comfy.load_for_inference(audio2pose)
        poses = inference.predict_poses(audio2pose.model, audio_features, style_id, smoothing_window, rotation_scale,
                                        device, comfy.progress(audio_features.num_frames))
        return io.NodeOutput(motion.with_poses(poses))


NODES = [AudioFeatures, Audio2Mesh, Audio2Pose]
