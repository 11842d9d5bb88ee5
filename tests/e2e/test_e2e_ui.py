"""The UI-format workflows load in ComfyUI's real web frontend (headless Chromium) and turn back into their API twins."""
from __future__ import annotations

import json
import shutil

import pytest

from comfy_server import REPO_ROOT, load_workflow

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KNOWN_HARMLESS_PAGE_ERRORS = ("Cannot read properties of undefined (reading 'id')",)  # offline template fetch


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        pg = browser.new_page()
        pg.errors = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        pg.goto(server.url + "/", wait_until="networkidle")
        pg.wait_for_function("() => window.app && window.app.graph && window.LiteGraph")
        yield pg
        browser.close()


@pytest.mark.parametrize("name", ["aniportrait_stage1", "aniportrait_audio2video", "aniportrait_pose_template", "aniportrait_reenactment"])
def test_ui_workflow_loads_in_the_editor_and_queues_as_its_api_twin(page, name):
    ui = json.loads((REPO_ROOT / "workflows" / f"{name}.json").read_text())
    result = page.evaluate(
        """async (wf) => {
            await window.app.loadGraphData(wf);
            const missing = window.app.graph._nodes.filter(n => !window.LiteGraph.registered_node_types[n.type]).map(n => n.type);
            const prompt = await window.app.graphToPrompt();
            return {missing, output: prompt.output};
        }""",
        ui,
    )
    assert result["missing"] == []
    api = load_workflow(f"{name}_api.json")
    ids = {key: str(i + 1) for i, key in enumerate(api)}  # the UI file numbers nodes in API order
    for key, node in api.items():
        got = result["output"][ids[key]]
        assert got["class_type"] == node["class_type"]
        for inp, value in node["inputs"].items():
            want = [ids[value[0]], value[1]] if isinstance(value, list) else value
            assert got["inputs"].get(inp) == want, f"{node['class_type']}.{inp}: {got['inputs'].get(inp)!r} != {want!r}"
    unexpected = [e for e in page.errors if not e.startswith(KNOWN_HARMLESS_PAGE_ERRORS)]
    assert unexpected == []
