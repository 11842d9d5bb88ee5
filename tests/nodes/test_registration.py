"""Every node of the pack registers the way ComfyUI registers it (a valid V3 schema and object_info entry),
in one category tree, with one vocabulary for the inputs that repeat."""
from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="module")
def registered(pack):
    """(module of nodes, the node classes as the extension lists them, their object_info entries)."""
    from aniportrait_pack import nodes

    extension = asyncio.run(nodes.comfy_entrypoint())
    node_classes = asyncio.run(extension.get_node_list())
    return nodes, node_classes, [cls.GET_NODE_INFO_V1() for cls in node_classes]  # what /object_info serves


def _node_info(inputs: list) -> dict:
    """object_info's input entries of a throwaway node holding ``inputs`` (how ComfyUI serves them)."""
    from comfy_api.latest import io

    class Probe(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="AniPortraitSchemaProbe", category="AniPortrait", inputs=inputs, outputs=[])

        @classmethod
        def execute(cls, **kwargs):
            return io.NodeOutput()

    info = Probe.GET_NODE_INFO_V1()["input"]
    return {**info.get("required", {}), **info.get("optional", {})}


def test_every_node_has_a_valid_schema_and_object_info(registered):
    _, node_classes, infos = registered
    ids = [cls.GET_SCHEMA().node_id for cls in node_classes]  # GET_SCHEMA validates (unique input/output ids, ...)
    assert len(ids) == len(set(ids)) and all(i.startswith("AniPortrait") for i in ids)
    for cls, info in zip(node_classes, infos):
        assert info["description"], cls.__name__
        assert info["display_name"].startswith("AniPortrait "), cls.__name__


def test_every_module_node_is_registered_once(registered):
    import importlib
    import pkgutil

    nodes, node_classes, _ = registered
    assert len(node_classes) == len(set(node_classes))
    for module_info in pkgutil.iter_modules(nodes.__path__):
        module = importlib.import_module(f"{nodes.__name__}.{module_info.name}")
        missing = [cls.__name__ for cls in getattr(module, "NODES", []) if cls not in node_classes]
        assert not missing, f"{module.__name__}: {missing} not registered in nodes/__init__.py"


def test_one_category_tree_registered_in_its_order(registered):
    from aniportrait_pack.nodes import schema

    _, node_classes, infos = registered
    categories = [info["category"] for info in infos]
    outside = {cls.__name__: c for cls, c in zip(node_classes, categories) if c not in schema.CATEGORIES}
    assert not outside, f"categories outside the tree {schema.CATEGORIES}: {outside}"
    assert set(categories) == set(schema.CATEGORIES), f"unused categories: {set(schema.CATEGORIES) - set(categories)}"
    # retired nodes (deprecated: hidden from search) come last
    order = [(info.get("deprecated", False), schema.CATEGORIES.index(c)) for info, c in zip(infos, categories)]
    live = [rank for retired, rank in order if not retired]
    assert live == sorted(live), "nodes/__init__.py must list the nodes category by category, in the tree's order"
    assert [retired for retired, _ in order] == sorted(retired for retired, _ in order), "retired nodes come last"


def test_display_names_are_unique(registered):
    _, _, infos = registered
    names = [info["display_name"] for info in infos]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_shared_inputs_are_identical_everywhere(registered):
    """A width/height pair, on_missing, a source video's fps: the same widget on every node that has it."""
    from aniportrait_pack.nodes import schema

    _, node_classes, infos = registered
    sizes = {"video_size": _node_info(schema.video_size()), "resize_to_video_size": _node_info(schema.resize_to_video_size())}
    on_missing = _node_info([schema.on_missing()])["on_missing"]
    seen = {name: 0 for name in sizes} | {"on_missing": 0}
    for cls, info in zip(node_classes, infos):
        inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        if "width" in inputs or "height" in inputs:
            pair = {"width": inputs.get("width"), "height": inputs.get("height")}
            match = [name for name, piece in sizes.items() if pair == piece]
            assert match, f"{cls.__name__}: width/height is not one of schema's size pieces: {pair}"
            seen[match[0]] += 1
        if "on_missing" in inputs:
            assert inputs["on_missing"] == on_missing, cls.__name__
            seen["on_missing"] += 1
        if "fps" in inputs and inputs["fps"][1]["tooltip"] == schema.SOURCE_FPS_TOOLTIP:
            default = inputs["fps"][1]["default"]
            assert inputs["fps"] == _node_info([schema.source_fps(default)])["fps"], cls.__name__
    assert seen["video_size"] >= 3 and seen["resize_to_video_size"] >= 2 and seen["on_missing"] >= 4, seen


#: widgets appended (optional) after the ones saved workflows hold: which face when there are several
FACE_CHOICE = ["which_face", "face_index", "face_point"]


def test_widget_order_and_defaults_of_saved_workflows_are_kept(registered):
    """Saved workflows store widget values by position: the shared pieces kept each node's widget order."""
    _, node_classes, infos = registered
    expected = {
        "AniPortraitFaceAnalysis": ["width", "height", *FACE_CHOICE],
        "AniPortraitFaceFromPoints": ["mode", "position", "fit", "width", "height"],
        "AniPortraitProjectLandmarks": ["width", "height"],
        "AniPortraitFaceCrop": ["width", "height", "scale", "vertical_offset", "smoothing", "on_missing", "pad", *FACE_CHOICE],
        "AniPortraitFaceReenactment": ["fps", "smoothing_window", "on_missing", *FACE_CHOICE],
        "AniPortraitVideoPoseTemplate": ["fps", "smoothing_window", "on_missing", *FACE_CHOICE],
        "AniPortraitAlignVideoToAudio": ["fps", "length_rule", "out_fps"],
        "AniPortraitVideoHeadMotion": ["on_missing"],
    }
    defaults = {("AniPortraitFaceReenactment", "fps"): 30.0, ("AniPortraitVideoPoseTemplate", "fps"): 25.0,
                ("AniPortraitAlignVideoToAudio", "fps"): 25.0, ("AniPortraitFaceCrop", "width"): 512,
                ("AniPortraitFaceAnalysis", "width"): 0}
    widget_types = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
    by_id = {info["name"]: info for info in infos}
    for node_id, widgets in expected.items():
        info = by_id[node_id]
        inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = [name for name in info["input_order"].get("required", []) + info["input_order"].get("optional", [])
                 if isinstance(inputs[name][0], list) or inputs[name][0] in widget_types]
        assert order == widgets, node_id
    for (node_id, name), value in defaults.items():
        inputs = {**by_id[node_id]["input"].get("required", {}), **by_id[node_id]["input"].get("optional", {})}
        assert inputs[name][1]["default"] == value, (node_id, name)


def test_every_node_in_the_search_has_a_help_page_the_frontend_finds(pack, registered):
    """The frontend (>= 1.22) fetches ``/extensions/<pack folder>/docs/<node id>.md`` from the pack's WEB_DIRECTORY:
    every node a user can add has its page there, and each page starts with the node's display name."""
    from pathlib import Path

    _, _, infos = registered
    web = Path(pack.__file__).parent / pack.WEB_DIRECTORY
    for info in infos:
        page = web / "docs" / f"{info['name']}.md"
        if info.get("deprecated"):
            continue  # retired nodes are hidden: their text names the replacement
        assert page.is_file(), f"no help page for {info['name']} at {page}"
        title = page.read_text().splitlines()[0]
        assert title.startswith("# ") and info["display_name"].startswith(title[2:]), (title, info["display_name"])
