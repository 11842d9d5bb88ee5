"""ComfyUI nodes of the AniPortrait pack (V3 schema): a thin layer over aniportrait_lib."""
from __future__ import annotations

from typing_extensions import override
from comfy_api.latest import ComfyExtension, io

from . import paths, pose_templates, reenactment, stage1, stage2

paths.register()


class AniPortraitExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*stage1.NODES, *pose_templates.NODES, *reenactment.NODES, *stage2.NODES]


async def comfy_entrypoint() -> AniPortraitExtension:
    return AniPortraitExtension()
