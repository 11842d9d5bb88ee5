"""The sinusoidal position table shared by Audio2Pose (``PPE.pe``) and the motion modules (``pos_encoder.pe``)."""
from __future__ import annotations

import math

import torch


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """``(1, length, dim)`` float32 table: sin on even channels, cos on odd, wavelengths up to 10000."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, length, dim)
    pe[0, :, 0::2] = torch.sin(position * div)
    pe[0, :, 1::2] = torch.cos(position * div)
    return pe
