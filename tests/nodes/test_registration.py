"""Every node of the pack registers the way ComfyUI registers it: a valid V3 schema and object_info entry."""
from __future__ import annotations

import asyncio


def test_every_node_has_a_valid_schema_and_object_info(pack):
    from aniportrait_pack import nodes

    extension = asyncio.run(nodes.comfy_entrypoint())
    node_classes = asyncio.run(extension.get_node_list())
    ids = [cls.GET_SCHEMA().node_id for cls in node_classes]  # GET_SCHEMA validates (unique input/output ids, ...)
    assert len(ids) == len(set(ids)) and all(i.startswith("AniPortrait") for i in ids)
    for cls in node_classes:
        info = cls.GET_NODE_INFO_V1()  # what /object_info serves
        assert info["category"].startswith("AniPortrait") and info["description"], cls.__name__
        assert info["display_name"].startswith("AniPortrait "), cls.__name__
