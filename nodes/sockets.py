"""The pack's socket types (defined once). Everything else uses ComfyUI core types.

Each carries one dataclass of ``aniportrait_lib`` (see ``aniportrait_lib/data.py``).
"""
from comfy_api.latest import io

Audio2MeshModel = io.Custom("ANIPORTRAIT_AUDIO2MESH")  # ModelPatcher of audio.models.Audio2Mesh
Audio2PoseModel = io.Custom("ANIPORTRAIT_AUDIO2POSE")  # ModelPatcher of audio.models.Audio2Pose
FaceLandmarkerModel = io.Custom("ANIPORTRAIT_FACE_LANDMARKER")  # face.landmarker.FaceLandmarker
Face = io.Custom("ANIPORTRAIT_FACE")  # data.Face
AudioFeatures = io.Custom("ANIPORTRAIT_AUDIO_FEATURES")  # data.AudioFeatures
Motion = io.Custom("ANIPORTRAIT_MOTION")  # data.Motion
Landmarks = io.Custom("ANIPORTRAIT_LANDMARKS")  # data.Landmarks
PoseTemplate = io.Custom("ANIPORTRAIT_POSE_TEMPLATE")  # data.PoseTemplate
CropInfo = io.Custom("ANIPORTRAIT_CROP_INFO")  # data.CropInfo
Footage = io.Custom("ANIPORTRAIT_FOOTAGE")  # media.frames.Footage: a video's frames read on demand, on a timeline
