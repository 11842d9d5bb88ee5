"""Context windows for long videos (the original's ``uniform`` schedule).

The denoiser sees at most ``context_frames`` frames at once (16; the motion module's position
encoding is 32 long). Longer videos are covered by windows that overlap by ``context_overlap``
frames and wrap around the end of the clip (closed loop), so the last window continues into the
first frames. The sampler sums the predictions of all windows and divides by the number of windows
that covered each frame.

With the original's sampler arguments (step 0, stride 1) the windows start at
``0, L - O, 2 (L - O), ...`` while the start is below ``num_frames`` and hold
``[(start + k) % num_frames for k in range(L)]``; a clip of at most ``L`` frames is one window of
all frames. ``step``/``context_stride`` > 1 (dilated windows, offsets that change per step) are
supported for completeness with the original's formula.
"""
from __future__ import annotations

import math

__all__ = ["uniform_context_windows", "frame_coverage"]


def _ordered_halving(value: int) -> float:
    """Bit-reversal of ``value`` as a 64-bit integer, mapped to [0, 1) (0 -> 0, 1 -> 0.5, 2 -> 0.25...)."""
    reversed_bits = int(f"{value:064b}"[::-1], 2)
    return reversed_bits / (1 << 64)


def uniform_context_windows(
    num_frames: int,
    context_frames: int = 16,
    context_overlap: int = 4,
    context_stride: int = 1,
    closed_loop: bool = True,
    step: int = 0,
) -> list[list[int]]:
    """Frame indices of every context window, like the original ``uniform`` context scheduler.

    Args:
        num_frames: frames in the clip (>= 1).
        context_frames: frames per window L (>= 1).
        context_overlap: frames shared by consecutive windows O (0 <= O < L).
        context_stride: maximum dilation level (1 = contiguous windows only, the original default).
        closed_loop: windows wrap around the end of the clip (True in the original).
        step: denoising step index used to offset windows (the original always passes 0).

    Returns:
        List of windows, each a list of ``min(L, num_frames)`` frame indices in ``[0, num_frames)``.

    Raises:
        ValueError: on a non-positive frame count/window length, a negative overlap, an overlap that
            is not smaller than the window, or a stride < 1.
    """
    num_frames, context_frames = int(num_frames), int(context_frames)
    context_overlap, context_stride = int(context_overlap), int(context_stride)
    if num_frames < 1:
        raise ValueError(f"The video needs at least 1 frame, got {num_frames}.")
    if context_frames < 1:
        raise ValueError(f"context_frames must be at least 1, got {context_frames}.")
    if context_overlap < 0:
        raise ValueError(f"context_overlap must be >= 0, got {context_overlap}.")
    if context_overlap >= context_frames:
        raise ValueError(
            f"context_overlap ({context_overlap}) must be smaller than context_frames ({context_frames}); "
            "otherwise the windows never advance."
        )
    if context_stride < 1:
        raise ValueError(f"context_stride must be at least 1, got {context_stride}.")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}.")

    if num_frames <= context_frames:
        return [list(range(num_frames))]

    levels = min(context_stride, int(math.ceil(math.log2(num_frames / context_frames))) + 1)
    offset_fraction = _ordered_halving(step)
    pad = int(round(num_frames * offset_fraction))
    end = num_frames + pad + (0 if closed_loop else -context_overlap)
    windows: list[list[int]] = []
    for level in range(levels):
        dilation = 1 << level
        start = int(offset_fraction * dilation) + pad
        hop = context_frames * dilation - context_overlap
        for j in range(start, end, hop):
            windows.append([e % num_frames for e in range(j, j + context_frames * dilation, dilation)])
    return windows


def frame_coverage(windows: list[list[int]], num_frames: int) -> list[int]:
    """How many windows cover each frame ((num_frames,) counts); every entry must be >= 1 for sampling."""
    counts = [0] * int(num_frames)
    for window in windows:
        for f in window:
            counts[f] += 1
    return counts
