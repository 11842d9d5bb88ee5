"""The UI-format workflows of workflows/ in ComfyUI's real web frontend (headless Chromium).

Each one is listed in the Templates browser with its thumbnail, loads without error, is laid out
without overlapping nodes (the frontend's own bounding boxes), has only valid widget values, and
turns back (graphToPrompt) into exactly its API twin of tests/e2e/prompts/, which the other e2e
tests queue. A screenshot at fit view of each goes to the test's temporary folder, or to docs/
(the README shows those) with ANIPORTRAIT_UPDATE_DOCS=1.

The browser tests run twice: in the frontend the vendored ComfyUI pins (comfyui-frontend-package 1.27.10,
in its venv) and in the newest 1.x release on PyPI, which tests/support/install_newest_frontend.py installs into
a folder of its own and a second server serves with ``--front-end-root``. The versions are printed.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import requests

from support import install_newest_frontend
from support.comfy_server import REPO_ROOT, comfy_dir, load_workflow, start_server, stop_server

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KNOWN_HARMLESS_PAGE_ERRORS = ("Cannot read properties of undefined (reading 'id')",)  # offline template fetch
WORKFLOWS = REPO_ROOT / "workflows"
NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
VIEWPORT = {"width": 2560, "height": 1100}
FRONTENDS = ["pinned", "newest"]


def pinned_frontend_version() -> str:
    """The comfyui-frontend-package version the vendored ComfyUI's requirements.txt pins (its venv has it)."""
    text = (comfy_dir() / "ComfyUI" / "requirements.txt").read_text()
    return re.search(r"^comfyui-frontend-package==(\S+)", text, re.M).group(1)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


@pytest.fixture(scope="module")
def workflow_inputs(stage2_models):
    """The e2e server with every model file and example input the workflows name, so each file list is real."""
    for src in (REPO_ROOT / "example_inputs").iterdir():
        if src.suffix != ".md" and not (stage2_models.input_dir / src.name).exists():
            shutil.copyfile(src, stage2_models.input_dir / src.name)
    return stage2_models


@pytest.fixture(scope="module", params=FRONTENDS)
def frontend(request):
    """(which, version, static folder): the pinned frontend (served by default, no folder) or the newest 1.x of
    PyPI (installed into its own folder when it is not there yet; ANIPORTRAIT_NEWEST_FRONTEND=1.58.1 picks
    that release instead, to reproduce a run)."""
    pinned = pinned_frontend_version()
    if request.param == "pinned":
        return "pinned", pinned, None
    version, static = install_newest_frontend.ensure(os.environ.get("ANIPORTRAIT_NEWEST_FRONTEND") or None,
                                                     python=sys.executable)
    assert _version_key(version) > _version_key(pinned), f"the newest frontend {version} is not newer than {pinned}"
    return "newest", version, static


@pytest.fixture(scope="module")
def ui_server(workflow_inputs, frontend, tmp_path_factory):
    """The server whose web page the browser loads: the e2e server for the pinned frontend; for the newest one a
    second server with ``--front-end-root``, over the same model folders and a copy of the same inputs."""
    which, _, static = frontend
    if static is None:
        yield workflow_inputs
        return
    srv = start_server(tmp_path_factory.mktemp(f"comfy_frontend_{which}"), models=workflow_inputs.models_dir,
                       front_end_root=static)
    try:
        for src in workflow_inputs.input_dir.iterdir():
            if src.is_file():
                shutil.copyfile(src, srv.input_dir / src.name)
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="module")
def page(ui_server, frontend, request):
    from playwright.sync_api import sync_playwright

    which, version, _ = frontend
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        pg = browser.new_page(viewport=VIEWPORT)
        pg.errors = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        pg.goto(ui_server.url + "/", wait_until="networkidle")
        pg.wait_for_function(_READY)
        served = pg.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || null")
        api = pg.evaluate(_API)
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():  # in the CI log, -q too
            print(f"\n[frontend] {which}: comfyui-frontend-package {version} (page reports {served}), {api}")
        assert served in (None, version), f"{which}: the page runs frontend {served}, not {version}"
        pg.evaluate(_SCREENSHOT_VIEW)
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def object_info(ui_server):
    return ui_server.object_info()


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory, frontend):
    """docs/ (ANIPORTRAIT_UPDATE_DOCS=1) gets the pinned frontend's screenshots only: the README shows those."""
    if os.environ.get("ANIPORTRAIT_UPDATE_DOCS") == "1" and frontend[0] == "pinned":
        return REPO_ROOT / "docs"
    return tmp_path_factory.mktemp(f"screenshots_{frontend[0]}")


def test_workflows_folder_holds_only_ui_workflows_each_with_its_thumbnail():
    assert NAMES == ["aniportrait_audio2video", "aniportrait_audio2video_ksampler", "aniportrait_dubbing", "aniportrait_photo_paste_back", "aniportrait_pose_template",
                     "aniportrait_reenactment", "aniportrait_stage1", "aniportrait_two_speakers"]
    for name in NAMES:
        wf = json.loads((WORKFLOWS / f"{name}.json").read_text())
        assert "nodes" in wf and "links" in wf and "version" in wf, f"{name}.json is not a UI-format workflow"
        assert (WORKFLOWS / f"{name}.jpg").is_file(), f"no thumbnail workflows/{name}.jpg"
    assert not list(WORKFLOWS.glob("*_api.json")), "API prompts live in tests/e2e/prompts/"


def test_templates_browser_lists_each_workflow_and_serves_its_thumbnail(workflow_inputs):
    ui_server = workflow_inputs  # the backend's answer: the same whichever frontend is served
    listed = requests.get(f"{ui_server.url}/workflow_templates", timeout=30).json()
    packs = [k for k, names in listed.items() if "aniportrait_audio2video" in names]
    assert len(packs) == 1, listed
    assert sorted(listed[packs[0]]) == NAMES
    for name in NAMES:  # the frontend asks for /api/workflow_templates/<pack>/<name>.jpg (mediaSubtype "jpg")
        r = requests.get(f"{ui_server.url}/api/workflow_templates/{packs[0]}/{name}.jpg", timeout=30)
        assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff", f"thumbnail of {name}: {r.status_code}"
        r = requests.get(f"{ui_server.url}/api/workflow_templates/{packs[0]}/{name}.json", timeout=30)
        assert r.status_code == 200 and r.json()["nodes"]


# The JavaScript below runs in both frontends. 1.27.10 and 1.58.1 offer the same globals (window.app,
# window.LiteGraph, app.graphToPrompt, app.loadGraphData, app.extensionManager's setting / command, canvas.ds's
# fitToBounds / convertOffsetToCanvas) and both keep the private graph._nodes / _groups / group._bounding next
# to public getters (graph.nodes / groups, group.boundingRect), which the code prefers, falling back to the
# private names. What differs: 1.58's zoom / minimap buttons are no PrimeVue .p-buttongroup (hidden through the
# minimap button's container); 1.58 polls /api/jobs, which the 0.3.64 backend lacks (404s in the console, no
# page error); 1.27 throws one harmless page error offline (KNOWN_HARMLESS_PAGE_ERRORS), 1.58 none.
_READY = "() => window.app && window.app.graph && window.LiteGraph && window.app.canvas"

# which of those APIs this frontend has (printed with its version)
_API = """() => {
    const app = window.app, graph = app.graph, has = (o, k) => !!o && k in o;
    return {
        nodes: has(graph, "nodes") ? "graph.nodes" : "graph._nodes",
        groups: has(graph, "groups") ? "graph.groups" : "graph._groups",
        graphToPrompt: typeof app.graphToPrompt === "function",
        registered_node_types: has(window.LiteGraph, "registered_node_types"),
        settings: has(app.extensionManager && app.extensionManager.setting, "set"),
    };
}"""

# the canvas alone (focus mode: no menus; no minimap, no render info) with text drawn at fit-view zoom
_SCREENSHOT_VIEW = """async () => {
    const app = window.app, ext = app.extensionManager || {};  // cosmetic only: skipped where a frontend lacks it
    if (ext.setting && ext.setting.set) {
        await ext.setting.set("Comfy.Minimap.Visible", false);
        await ext.setting.set("LiteGraph.Canvas.MinFontSizeForLOD", 1);
    }
    if (ext.command && ext.command.execute) await ext.command.execute("Workspace.ToggleFocusMode");
    app.canvas.show_info = false;
    const style = document.createElement("style");  // the zoom controls: 1.27's button group, 1.58's toolbar
    style.textContent = ".p-buttongroup, div:has(> [data-testid='toggle-minimap-button']) { display: none !important; }";
    document.head.appendChild(style);
}"""

_INSPECT = """async (wf) => {
    const app = window.app, LG = window.LiteGraph;
    await app.loadGraphData(wf);
    await new Promise(r => setTimeout(r, 2000));  // image / video previews load and may resize their nodes
    const graph = app.graph, canvas = app.canvas;
    const allNodes = Array.from(graph.nodes || graph._nodes), allGroups = Array.from(graph.groups || graph._groups);
    const rectOf = (g) => Array.from(g.boundingRect || g._bounding);
    if (typeof app.graphToPrompt !== "function") throw new Error("this frontend has no app.graphToPrompt");
    const missing = allNodes.filter(n => !LG.registered_node_types[n.type]).map(n => n.type);
    // fit view: every node and group in the window
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    const grow = (r) => { x0 = Math.min(x0, r[0]); y0 = Math.min(y0, r[1]); x1 = Math.max(x1, r[0] + r[2]); y1 = Math.max(y1, r[1] + r[3]); };
    canvas.draw(true, true);  // fills the nodes' bounding boxes
    allNodes.forEach(n => grow(n.getBounding()));
    allGroups.forEach(g => grow(rectOf(g)));
    canvas.ds.fitToBounds([x0 - 20, y0 - 20, x1 - x0 + 40, y1 - y0 + 40], {zoom: 0.97});
    canvas.setDirty(true, true);
    canvas.draw(true, true);
    const el = canvas.canvas.getBoundingClientRect();
    const [sx0, sy0] = canvas.ds.convertOffsetToCanvas([x0 - 20, y0 - 20]);
    const [sx1, sy1] = canvas.ds.convertOffsetToCanvas([x1 + 20, y1 + 20]);
    const clip = {x: Math.max(0, el.x + sx0), y: Math.max(0, el.y + sy0)};
    clip.width = Math.min(window.innerWidth, el.x + sx1) - clip.x;
    clip.height = Math.min(window.innerHeight, el.y + sy1) - clip.y;
    const values = (w) => {
        let v = w.options && w.options.values;
        if (typeof v === "function") v = v(w, null);
        return Array.isArray(v) ? v : null;
    };
    const nodes = allNodes.map(n => ({
        id: n.id, type: n.type, title: n.title, bounding: Array.from(n.getBounding()),
        widgets: (n.widgets || []).filter(w => w.serialize !== false || values(w)).map(w => ({
            name: w.name, type: w.type, value: (typeof w.value === "object" ? null : w.value),
            options: values(w), min: w.options ? w.options.min : undefined, max: w.options ? w.options.max : undefined,
        })),
    }));
    const groups = allGroups.map(g => ({title: g.title, bounding: rectOf(g)}));
    const prompt = await app.graphToPrompt();
    return {missing, nodes, groups, clip, output: prompt.output};
}"""


def _inside(inner, outer) -> bool:
    return (inner[0] >= outer[0] and inner[1] >= outer[1]
            and inner[0] + inner[2] <= outer[0] + outer[2] and inner[1] + inner[3] <= outer[1] + outer[3])


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _assert_queues_as(got: dict, api: dict, object_info: dict, saved_before: bool = False) -> None:
    """graphToPrompt's ``got`` is exactly the API prompt ``api`` (UI node ids are its keys). The frontend also sends
    its preview widgets (LoadAudio's audioUI, LoadVideo's video-preview), which are no inputs of those nodes and
    which the server drops. ``saved_before``: a workflow saved before optional widgets were appended to its nodes;
    the frontend gives those their defaults, which is all it may add."""
    assert sorted(got, key=int) == sorted(api, key=int)
    for key, node in api.items():
        assert got[key]["class_type"] == node["class_type"], key
        schema = object_info[node["class_type"]]["input"]
        known = {k for part in ("required", "optional") for k in schema.get(part, {})}
        sent = {k: v for k, v in got[key]["inputs"].items() if k in known}
        if saved_before:
            optional = schema.get("optional", {})
            added = {k: v for k, v in sent.items() if k not in node["inputs"] and k in optional}
            assert all(v == optional[k][1].get("default") for k, v in added.items()), (key, added)
            sent = {k: v for k, v in sent.items() if k not in added}
        assert sent == node["inputs"], f"{node['class_type']} ({key}): {sent} != {node['inputs']}"


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_is_laid_out_valid_and_queues_as_its_api_twin(page, object_info, screenshot_dir, name):
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    page.errors.clear()
    result = page.evaluate(_INSPECT, ui)
    assert result["missing"] == []
    nodes, groups = result["nodes"], result["groups"]

    # layout: no node overlaps another (title bars included); every node is inside one group or none
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert not _overlap(a["bounding"], b["bounding"]), f"'{a['title']}' overlaps '{b['title']}'"
        for g in groups:
            assert _inside(a["bounding"], g["bounding"]) or not _overlap(a["bounding"], g["bounding"]), \
                f"'{a['title']}' sticks out of group '{g['title']}'"
    for i, g in enumerate(groups):
        for h in groups[i + 1:]:
            assert not _overlap(g["bounding"], h["bounding"]), f"groups '{g['title']}' and '{h['title']}' overlap"
    api_nodes = [n for n in nodes if str(n["id"]) in result["output"]]
    assert all(any(_inside(n["bounding"], g["bounding"]) for g in groups) for n in api_nodes), "a node outside every group"
    xs = {g["title"]: g["bounding"][0] for g in groups}
    assert list(xs) == sorted(xs, key=xs.get), "stage groups run left to right"
    notes = [n for n in nodes if n["type"] in ("Note", "MarkdownNote")]
    assert len(notes) == 1
    note = notes[0]["widgets"][0]["value"]
    audio2pose = [] if all(n["inputs"].get("audio2pose_name") == "none" for n in load_workflow(f"{name}_api.json").values()
                           if n["class_type"] == "AniPortraitLoadAudioModels") else ["audio2pose.pt"]
    if not audio2pose:
        assert "audio2pose.pt" not in note, "a workflow that loads no Audio2Pose must not ask for its file"
    for cls, files in {"AniPortraitLoadAudioModels": ["audio2mesh.pt", *audio2pose],
                       "AniPortraitLoadFaceLandmarker": ["face_landmarker.task"],
                       "AniPortraitLoadVideoModel": ["reference_unet.pth", "denoising_unet.pth", "motion_module.pth", "pose_guider.pth"],
                       "VAELoader": ["sd-vae-ft-mse.safetensors"],
                       "CLIPVisionLoader": ["sd-image-variations-image-encoder.safetensors"]}.items():
        if any(n["type"] == cls for n in nodes):
            assert all(f in note for f in files), f"the note must name {files}"

    # widget values: combos hold one of their options (the file lists of a server that has every file), numbers in range
    for n in nodes:
        for w in n["widgets"]:
            where = f"{n['title']}.{w['name']} = {w['value']!r}"
            if w["options"] is not None:
                assert w["value"] in w["options"], f"{where} not in {w['options'][:10]}"
            if isinstance(w["value"], (int, float)) and not isinstance(w["value"], bool):
                assert w["min"] is None or w["value"] >= w["min"], where
                assert w["max"] is None or w["value"] <= w["max"], where
    titles = [n["title"] for n in nodes if n["type"] in ("LoadImage", "LoadAudio", "LoadVideo")]
    assert titles and all("pick" in t for t in titles), f"input nodes must say they are yours to pick: {titles}"

    # graphToPrompt gives exactly the API prompt the e2e tests queue
    _assert_queues_as(result["output"], load_workflow(f"{name}_api.json"), object_info)

    page.screenshot(path=str(screenshot_dir / f"{name}.png"), clip=result["clip"])
    unexpected = [e for e in page.errors if not e.startswith(KNOWN_HARMLESS_PAGE_ERRORS)]
    assert unexpected == []


def test_a_workflow_saved_with_the_retired_nodes_opens_and_queues_as_saved(page, object_info):
    """workflows/aniportrait_audio2video.json as shipped before the stage-2 nodes were merged: every node type is
    still known to the frontend (nothing reported missing), and graphToPrompt gives the API twin of that version,
    which tests/e2e/test_e2e_stage2.py runs to an mp4."""
    retired = Path(__file__).parent / "retired"
    ui = json.loads((retired / "aniportrait_audio2video.json").read_text())
    page.errors.clear()
    result = page.evaluate(_INSPECT, ui)
    assert result["missing"] == []
    _assert_queues_as(result["output"], json.loads((retired / "aniportrait_audio2video_api.json").read_text()), object_info,
                      saved_before=True)
    assert [n["title"] for n in result["nodes"] if n["type"] == "AniPortraitLmk2VideoSampler"] == [
        "AniPortrait Lmk2Video Sampler"], "the saved title stays"
