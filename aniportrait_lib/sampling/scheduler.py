"""DDIM scheduler exactly as AniPortrait configures it (stage 2 sampler).

The original builds ``diffusers.DDIMScheduler(**noise_scheduler_kwargs)`` from
``configs/inference/inference_v2.yaml``. This module re-implements the few parts that configuration
uses (a small, dependency-free DDIM, eta 0) so the numerics do not drift with the installed diffusers
version:

* linear betas 0.00085 .. 0.012 over 1000 training steps (float32), rescaled to zero terminal SNR
  (``alphas_cumprod[999] == 0``);
* ``v_prediction``; ``clip_sample`` false; no thresholding; ``set_alpha_to_one`` (the alpha used
  past the last step is 1.0);
* ``trailing`` timestep spacing: ``round(arange(1000, 0, -1000/N)) - 1`` (``steps_offset`` has no
  effect with trailing spacing);
* the quirk of diffusers' ``step()``: the previous timestep is ``t - 1000 // N``, NOT the next
  entry of the timestep list (they differ when ``1000 % N != 0``; e.g. N=3 lists 999, 666, 332 but
  the step at 666 lands on ``alphas_cumprod[333]``).

``SCHEDULER_KWARGS`` holds the original constructor arguments, so
``diffusers.DDIMScheduler(**SCHEDULER_KWARGS)`` builds the reference scheduler for cross-checks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["SCHEDULER_KWARGS", "DDIMStepOutput", "AniPortraitDDIM", "make_scheduler"]

#: ``noise_scheduler_kwargs`` of the original ``configs/inference/inference_v2.yaml``.
SCHEDULER_KWARGS: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "clip_sample": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}

NUM_TRAIN_TIMESTEPS = 1000


def _rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale ``betas`` (float32, (T,)) so the last cumulative alpha is exactly 0 (Lin et al. 2023).

    The sqrt of the cumulative alphas is shifted so its last value is 0 and scaled so its first value
    is unchanged; betas are then recovered from the ratios of consecutive cumulative alphas.
    """
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first = alphas_bar_sqrt[0].clone()
    last = alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


@dataclass
class DDIMStepOutput:
    """Result of one DDIM step; both tensors have the shape of the input sample."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class AniPortraitDDIM:
    """Deterministic (eta = 0) v-prediction DDIM with zero-terminal-SNR betas and trailing spacing.

    Attributes:
        betas: (1000,) float32, after the zero-terminal-SNR rescale.
        alphas_cumprod: (1000,) float32; ``alphas_cumprod[-1] == 0``.
        final_alpha_cumprod: alpha used when the previous timestep is negative (1.0).
        init_noise_sigma: scale of the initial noise (1.0).
        timesteps: (N,) int64 after :meth:`set_timesteps`, descending (999 first).
    """

    def __init__(self, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> None:
        self.num_train_timesteps = int(num_train_timesteps)
        betas = torch.linspace(
            SCHEDULER_KWARGS["beta_start"], SCHEDULER_KWARGS["beta_end"], self.num_train_timesteps,
            dtype=torch.float32,
        )
        self.betas = _rescale_zero_terminal_snr(betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.final_alpha_cumprod = torch.tensor(1.0)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps = torch.zeros(0, dtype=torch.int64)

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Set and return the ``num_inference_steps`` timesteps (int64, trailing spacing, 999 first)."""
        n = int(num_inference_steps)
        if n < 1 or n > self.num_train_timesteps:
            raise ValueError(
                f"steps must be between 1 and {self.num_train_timesteps}, got {num_inference_steps}."
            )
        self.num_inference_steps = n
        ratio = self.num_train_timesteps / n
        ts = np.round(np.arange(self.num_train_timesteps, 0, -ratio)).astype(np.int64) - 1
        self.timesteps = torch.from_numpy(ts)
        return self.timesteps

    def prev_timestep(self, timestep: int) -> int:
        """Timestep the step from ``timestep`` lands on: ``t - 1000 // N`` (diffusers' rule)."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps() before step()")
        return int(timestep) - self.num_train_timesteps // self.num_inference_steps

    def step(
        self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor
    ) -> DDIMStepOutput:
        """One deterministic DDIM step (eta 0) for a v-prediction model.

        Args:
            model_output: predicted velocity v, same shape as ``sample``.
            timestep: current timestep t (an entry of :attr:`timesteps`).
            sample: current noisy latents x_t (any shape).

        Returns:
            ``prev_sample`` x_{t'} with ``t' = t - 1000 // N`` and ``pred_original_sample`` x_0, both in
            the dtype/device of ``sample``. The arithmetic runs in float32 (or float64 for float64 input).
        """
        t = int(timestep)
        prev_t = self.prev_timestep(t)
        work = torch.float64 if sample.dtype == torch.float64 else torch.float32
        alpha_t = self.alphas_cumprod[t]
        alpha_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        alpha_t = alpha_t.to(device=sample.device, dtype=work)
        alpha_prev = alpha_prev.to(device=sample.device, dtype=work)
        beta_t = 1 - alpha_t
        x = sample.to(work)
        v = model_output.to(device=sample.device, dtype=work)
        pred_x0 = alpha_t**0.5 * x - beta_t**0.5 * v
        pred_eps = alpha_t**0.5 * v + beta_t**0.5 * x
        prev = alpha_prev**0.5 * pred_x0 + (1 - alpha_prev) ** 0.5 * pred_eps
        return DDIMStepOutput(prev_sample=prev.to(sample.dtype), pred_original_sample=pred_x0.to(sample.dtype))


def make_scheduler() -> AniPortraitDDIM:
    """A fresh scheduler configured like the original (see :data:`SCHEDULER_KWARGS`)."""
    return AniPortraitDDIM()
