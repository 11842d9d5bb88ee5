"""Face crops framed like AniPortrait's training data, and pasting generated crops back (``crop``, ``paste``)."""
from .crop import (DEFAULT_SCALE, DEFAULT_SMOOTHING, DEFAULT_VERTICAL_OFFSET, PAD_MODES, crop_box_for_face,
                   crop_frames, crop_info_for_faces, face_box, fill_boxes, resample, smooth_boxes)
from .paste import (DEFAULT_EXPAND, DEFAULT_FEATHER, DEFAULT_MASK, MASK_MODES, MAX_FEATHER, check_feather, face_mask,
                    face_size, face_size_of, feather_mask, match_colors, paste_frame, paste_frames)

__all__ = ["DEFAULT_SCALE", "DEFAULT_SMOOTHING", "DEFAULT_VERTICAL_OFFSET", "PAD_MODES", "crop_box_for_face",
           "crop_frames", "crop_info_for_faces", "face_box", "fill_boxes", "resample", "smooth_boxes",
           "DEFAULT_EXPAND", "DEFAULT_FEATHER", "DEFAULT_MASK", "MASK_MODES", "MAX_FEATHER", "check_feather", "face_mask",
           "face_size", "face_size_of", "feather_mask", "match_colors", "paste_frame", "paste_frames"]
