"""ComfyUI nodes of the AniPortrait pack (V3 schema): a thin layer over aniportrait_lib."""
from __future__ import annotations

from typing_extensions import override
from comfy_api.latest import ComfyExtension, io

from . import audio, comfy_adapter, compose, dubbing, face, loaders, motion, motion_edit, placement, sampling, video_out

comfy_adapter.register_folders()


class AniPortraitExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*loaders.NODES, *face.NODES, *placement.NODES, *audio.NODES, *motion.NODES, *sampling.NODES, *dubbing.NODES, *motion_edit.NODES, *compose.NODES, *video_out.NODES]


async def comfy_entrypoint() -> AniPortraitExtension:
    return AniPortraitExtension()
