"""The pack's socket types (defined once). Everything else uses ComfyUI core types."""
from comfy_api.latest import io

Audio2MeshModel = io.Custom("ANIPORTRAIT_AUDIO2MESH")
Audio2PoseModel = io.Custom("ANIPORTRAIT_AUDIO2POSE")
FaceLandmarkerModel = io.Custom("ANIPORTRAIT_FACE_LANDMARKER")
Face = io.Custom("ANIPORTRAIT_FACE")
AudioFeatures = io.Custom("ANIPORTRAIT_AUDIO_FEATURES")
Motion = io.Custom("ANIPORTRAIT_MOTION")
Landmarks = io.Custom("ANIPORTRAIT_LANDMARKS")
Lmk2VideoModels = io.Custom("ANIPORTRAIT_LMK2VIDEO")
PoseTemplate = io.Custom("ANIPORTRAIT_POSE_TEMPLATE")
