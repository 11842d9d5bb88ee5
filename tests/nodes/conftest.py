"""In-process node tests run each test inside ``torch.inference_mode()``, as ComfyUI's executor runs every node
(outside it, core's CLIP vision encode keeps its autograd state: ~1.8 GB per call on the CPU)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def inference_mode():
    with torch.inference_mode():
        yield
