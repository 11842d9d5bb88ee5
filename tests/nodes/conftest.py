"""Fixtures of the in-process node tests (tests/nodes): the vendored ComfyUI's modules imported into this
process, the pack imported the way ComfyUI imports a custom node, each node's ``execute`` called with real
ComfyUI types."""
from __future__ import annotations

import pytest

from support import comfy_inprocess


@pytest.fixture(autouse=True)
def node_tests_in_inference_mode():
    """Node tests run inside ``torch.inference_mode()``, as ComfyUI's executor runs every node (outside it,
    core's CLIP vision encode keeps its autograd state: ~1.8 GB per call on the CPU)."""
    import torch

    with torch.inference_mode():
        yield


@pytest.fixture(scope="session")
def pack(tmp_path_factory):
    """The pack as ComfyUI imports it (package name ``aniportrait_pack``), over a temporary models folder
    (``pack.work_dir``)."""
    return comfy_inprocess.import_pack(tmp_path_factory.mktemp("comfy_inprocess"))
