"""Pre-flight memory checks: estimate what a long step will allocate and refuse at once, with the
estimate and what to change, instead of failing minutes later with a raw allocator error.

Estimates are plain arithmetic on the inputs' sizes (no ComfyUI import; the host supplies the free
memory). They aim at the step's peak NEW allocations, within a small factor: a check refuses only what
cannot fit, so it errs on the side of letting a run start.
"""
from __future__ import annotations

from typing import Any

import torch

from .audio import inference as audio_inference

GB = 1e9


def gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def check(estimate_bytes: float, available_bytes: float | None, what: str, advice: str, memory: str = "RAM") -> None:
    """Raise ``ValueError`` when ``estimate_bytes`` exceed ``available_bytes`` (None: unknown, pass)."""
    if available_bytes is None or estimate_bytes <= available_bytes:
        return
    raise ValueError(f"{what} needs about {gb(estimate_bytes)} of {memory} but {gb(max(available_bytes, 0))} "
                     f"are free; {advice}")


# ----------------------------------------------------------------------------- Render Pose Images


def pose_images_bytes(frames: int, width: int, height: int) -> int:
    """Render Pose Images: the uint8 frames it draws plus the float32 core IMAGE made from them."""
    px = int(frames) * int(width) * int(height) * 3
    return px * (1 + 4)


POSE_IMAGES_ADVICE = ("render fewer frames (a shorter clip: split the audio) or a smaller width/height; "
                      "at 512x512 each minute at 30 fps is about 2.8 GB of pose images.")


# ----------------------------------------------------------------------------- sampler


def sampler_ram_bytes(frames: int, width: int, height: int, cfg: float = 3.5, dtype: torch.dtype = torch.float16,
                      on_gpu: bool = False, pose_cache_budget_bytes: int = 1 << 30) -> int:
    """Host memory AniPortrait Sampler adds once its pose input is in hand (uint8 frames already held, or
    landmarks drawn per window): the latent video in fp32 (latents, noise, the window accumulators and the
    output: ~6 copies) and the pose features (the pose guider's 320-channel 1/8 maps per frame, CFG
    batch): all of them on the CPU, on a GPU what spills past the on-device cache budget."""
    f, w, h = int(frames), int(width), int(height)
    poses = 0
    latents = 6 * f * 4 * (h // 8) * (w // 8) * 4
    elem = torch.finfo(dtype).bits // 8
    batch = 2 if cfg > 1.0 else 1
    features = batch * f * 320 * (h // 8) * (w // 8) * elem
    spill = max(0, features - pose_cache_budget_bytes) if on_gpu else features
    return int(poses + latents + spill)


def sampler_vram_bytes(frames: int, width: int, height: int, cfg: float, context_frames: int, dtype: torch.dtype,
                       weights_bytes: int, pose_cache_budget_bytes: int = 1 << 30, window_batch: int = 1,
                       context_overlap: int = 4) -> int:
    """Device memory: the models' weights, one UNet call's activations (``sampler.estimate_memory``), the
    latent video (fp32, a few copies) and the on-device part of the pose feature cache."""
    from .sampling import sampler

    f, w, h = int(frames), int(width), int(height)
    activations = sampler.estimate_memory(f, w, h, cfg, context_frames, dtype, window_batch, context_overlap)
    latents = 4 * f * 4 * (h // 8) * (w // 8) * 4
    elem = torch.finfo(dtype).bits // 8
    batch = 2 if cfg > 1.0 else 1
    cache = min(pose_cache_budget_bytes, batch * f * 320 * (h // 8) * (w // 8) * elem)
    return int(weights_bytes + activations + latents + cache)


SAMPLER_ADVICE = ("use fewer frames (split the audio into shorter clips), a smaller width/height, window_batch 1, "
                  "or cfg 1.0 (no unconditional pass).")


def module_bytes(*modules: Any) -> int:
    """Bytes of the parameters and buffers of torch modules (or objects with a ``model`` attribute)."""
    total = 0
    for m in modules:
        m = getattr(m, "model", m)
        if isinstance(m, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in m.parameters())
            total += sum(t.numel() * t.element_size() for t in m.buffers())
    return int(total)


# ----------------------------------------------------------------------------- VAE decode


def vae_decode_ram_bytes(frames: int, width: int, height: int) -> int:
    """core VAE Decode: the whole float32 IMAGE batch (frames x H x W x 3 x 4 bytes)."""
    return int(frames) * int(width) * int(height) * 3 * 4


VAE_DECODE_ADVICE = ("decode with 'AniPortrait Decode To Video' instead of VAE Decode + Create Video: it streams "
                     "chunks of frames into the mp4 and never holds the whole video.")


# ----------------------------------------------------------------------------- video jobs (crop, paste back)


def paste_back_bytes(frames: int, width: int, height: int, originals: int, crop_w: int, crop_h: int) -> int:
    """Paste Back (IMAGE out): per output frame the uint8 frame and mask, the float32 IMAGE and MASK made from them
    (3 x 4 + 4 bytes a pixel); the originals as uint8; the generated crops as float32 levels."""
    px = int(width) * int(height)
    return int(frames) * px * (3 + 1 + 12 + 4) + int(originals) * px * 3 + int(frames) * int(crop_w) * int(crop_h) * 3 * 4


PASTE_BACK_ADVICE = ("use AniPortrait Paste Back To Video: it decodes, pastes and encodes a chunk of frames at a "
                     "time and never holds the video (1080p: 41 MB a frame as IMAGE).")


def paste_video_bytes(chunk_frames: int, width: int, height: int) -> int:
    """Paste Back To Video: one chunk of source frames and composites (uint8) plus the float work on one frame
    (its window at most the whole frame: the resampled crop, the mask and the blend, float64)."""
    px = int(width) * int(height)
    return int(chunk_frames) * px * 3 * 2 + px * (3 + 1 + 3) * 8


PASTE_VIDEO_ADVICE = "lower chunk_frames (each chunk holds that many source frames)."


def face_crop_bytes(frames: int, width: int, height: int, crop_w: int, crop_h: int) -> int:
    """Face Crop of an IMAGE batch: the frames as uint8, the crops as float32 levels and as the float32 IMAGE."""
    return int(frames) * (int(width) * int(height) * 3 + int(crop_w) * int(crop_h) * 3 * 8)


FACE_CROP_ADVICE = ("connect the video itself (core Load Video, or Align Video To Audio's frames) instead of its "
                    "frames as IMAGE: then the crops are cut when read and only the first is given as IMAGE.")


# ----------------------------------------------------------------------------- audio models


def wav2vec_bytes(seconds: float, hidden: int = 768, heads: int = 12, conv_dim: int = 512,
                  elem: int = 4) -> int:
    """Peak of one wav2vec2 pass over ``seconds`` of 16 kHz audio: the larger of the first conv layer's
    output (``conv_dim`` channels at 3.2 kHz and its normalised copy; freed before the transformer) and
    one layer's attention scores (``heads x T x T``, T = 50 per second: the square of the length), plus
    the hidden states (50 Hz, a few copies). Measured on the CPU (SDPA): 0.14 / 0.67 / 2.0 GB for
    10 / 40 / 120 s against estimates of 0.14 / 0.57 / 1.9 GB."""
    t = max(1, int(round(50 * float(seconds))))
    conv = 2 * conv_dim * int(3200 * float(seconds)) * elem
    states = 8 * t * hidden * elem
    attention = heads * t * t * elem
    return int(max(conv, attention) + states)


def audio2mesh_bytes(seconds: float, model: Any = None) -> int:
    """Audio2Mesh: one wav2vec2 pass over the whole clip (the model's sizes when given)."""
    enc = getattr(getattr(getattr(model, "model", model), "audio_encoder", None), "config", None)
    hidden = int(getattr(enc, "hidden_size", 768))
    heads = int(getattr(enc, "num_attention_heads", 12))
    conv = getattr(enc, "conv_dim", (512,))
    conv_dim = int(conv[0] if isinstance(conv, (list, tuple)) else conv)
    return wav2vec_bytes(seconds, hidden, heads, conv_dim)


AUDIO_ADVICE = ("use shorter audio (split the speech into clips of a minute or two); wav2vec2 attention grows "
                "with the square of the length.")


# ----------------------------------------------------------------------------- one estimate per step


class Estimate:
    """What one step needs: ``ram`` / ``vram`` bytes (vram 0 on the CPU: everything is RAM there)."""

    def __init__(self, ram: int, vram: int, what: str, advice: str):
        self.ram, self.vram, self.what, self.advice = int(ram), int(vram), what, advice


def estimate(step: str, on_gpu: bool, **sizes: Any) -> Estimate:
    """The estimate for ``step`` (``pose_images``, ``sampler``, ``audio2mesh``, ``vae_decode``, ``paste_back``,
    ``paste_video``, ``face_crop``) from its sizes.

    On the CPU (``on_gpu`` False) what would live on the GPU is added to RAM.
    """
    if step == "pose_images":
        f, w, h = sizes["frames"], sizes["width"], sizes["height"]
        return Estimate(pose_images_bytes(f, w, h), 0, f"Render Pose Images ({f} frames at {w}x{h})", POSE_IMAGES_ADVICE)
    if step == "sampler":
        f, w, h = sizes["frames"], sizes["width"], sizes["height"]
        cfg, ctx, dtype = sizes.get("cfg", 3.5), sizes.get("context_frames", 16), sizes.get("dtype", torch.float16)
        weights = module_bytes(*sizes.get("models", ()))
        ram = sampler_ram_bytes(f, w, h, cfg, dtype, on_gpu)
        vram = sampler_vram_bytes(f, w, h, cfg, ctx, dtype, weights, window_batch=sizes.get("window_batch", 1),
                                  context_overlap=sizes.get("context_overlap", 4))
        what = f"AniPortrait Sampler ({f} frames at {w}x{h})"
        # on the CPU the weights are already in RAM: only the rest is new
        return Estimate(ram, vram, what, SAMPLER_ADVICE) if on_gpu else Estimate(ram + vram - weights, 0, what, SAMPLER_ADVICE)
    if step == "audio2mesh":
        secs = float(sizes["seconds"])
        # clips longer than whole_clip_seconds are encoded in windows: one window's worth at a time
        whole = sizes.get("whole_clip_seconds", audio_inference.WHOLE_CLIP_SECONDS)
        pass_secs = min(secs, audio_inference.WINDOW_SECONDS) if whole is not None and secs > whole else secs
        need = audio2mesh_bytes(pass_secs, sizes.get("model")) + 8 * int(50 * secs) * 768 * 4
        what = f"Audio2Mesh ({secs:.0f} s of audio)"
        return Estimate(0, need + module_bytes(sizes.get("model")), what, AUDIO_ADVICE) if on_gpu else Estimate(need, 0, what, AUDIO_ADVICE)
    if step == "paste_back":
        f, w, h = sizes["frames"], sizes["width"], sizes["height"]
        need = paste_back_bytes(f, w, h, sizes.get("originals", f), *sizes.get("crop_size", (512, 512)))
        return Estimate(need, 0, f"Paste Back ({f} frames at {w}x{h})", PASTE_BACK_ADVICE)
    if step == "paste_video":
        c, w, h = sizes["chunk_frames"], sizes["width"], sizes["height"]
        return Estimate(paste_video_bytes(c, w, h), 0, f"Paste Back To Video (chunks of {c} frames at {w}x{h})",
                        PASTE_VIDEO_ADVICE)
    if step == "face_crop":
        f, w, h = sizes["frames"], sizes["width"], sizes["height"]
        need = face_crop_bytes(f, w, h, *sizes["crop_size"])
        return Estimate(need, 0, f"Face Crop of {f} images at {w}x{h}", FACE_CROP_ADVICE)
    if step == "vae_decode":
        f, w, h = sizes["frames"], sizes["width"], sizes["height"]
        return Estimate(vae_decode_ram_bytes(f, w, h), 0, f"VAE Decode ({f} frames at {w}x{h})", VAE_DECODE_ADVICE)
    raise KeyError(f"no memory estimate for step '{step}'")
