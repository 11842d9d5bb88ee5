"""Turn an API-format workflow of workflows/ into the UI (LiteGraph) format ComfyUI's editor loads.

Widget order and socket types come from a running server's /object_info, so the UI file always
matches the nodes as registered.  Usage (the server must have this pack loaded):

    python scripts/make_ui_workflow.py workflows/X_api.json workflows/X.json --url http://127.0.0.1:8188
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import requests

# frontend-only widget values that follow certain inputs in widgets_values
CONTROL_AFTER_GENERATE = "fixed"
UPLOAD_EXTRA = {"LoadImage": ["image"], "LoadAudio": ["", ""]}


def _inputs_in_order(info: dict) -> list[tuple[str, object, dict]]:
    out = []
    for group in ("required", "optional"):
        for name, spec in info["input"].get(group, {}).items():
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            out.append((name, kind, opts))
    return out


def _is_widget(kind, opts: dict) -> bool:
    if isinstance(kind, list) or kind == "COMBO":
        return True
    return kind in ("INT", "FLOAT", "STRING", "BOOLEAN") and not opts.get("forceInput")


def api_to_ui(api: dict, object_info: dict) -> dict:
    ids = {key: i + 1 for i, key in enumerate(api)}
    nodes, links = [], []
    link_id = 0
    outputs_links: dict[tuple[int, int], list[int]] = {}
    for key, node in api.items():
        info = object_info[node["class_type"]]
        for name, kind, opts in _inputs_in_order(info):
            value = node["inputs"].get(name)
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                link_id += 1
                src = ids[value[0]]
                src_type = object_info[api[value[0]]["class_type"]]["output"][value[1]]
                links.append([link_id, src, value[1], ids[key], name, src_type])
                outputs_links.setdefault((src, value[1]), []).append(link_id)
    for key, node in api.items():
        nid = ids[key]
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, kind, opts in _inputs_in_order(info):
            value = node["inputs"].get(name)
            linked = isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            if _is_widget(kind, opts):
                entry = {"name": name, "type": "COMBO" if isinstance(kind, list) else kind, "widget": {"name": name}, "link": None}
                widgets.append(opts.get("default") if value is None or linked else value)
                if opts.get("control_after_generate"):
                    widgets.append(CONTROL_AFTER_GENERATE)
                if linked:
                    entry["link"] = next(l[0] for l in links if l[3] == nid and l[4] == name)
                    inputs.append(entry)
            else:
                lid = next((l[0] for l in links if l[3] == nid and l[4] == name), None)
                inputs.append({"name": name, "type": kind, "link": lid})
        widgets += UPLOAD_EXTRA.get(node["class_type"], [])
        outputs = [
            {"name": oname, "type": otype, "links": outputs_links.get((nid, i), []), "slot_index": i}
            for i, (oname, otype) in enumerate(zip(info["output_name"], info["output"]))
        ]
        col, row = divmod(nid - 1, 5)
        nodes.append({
            "id": nid, "type": node["class_type"], "pos": [60 + 380 * col, 60 + 260 * row], "size": [340, 200],
            "flags": {}, "order": nid - 1, "mode": 0, "inputs": inputs, "outputs": outputs,
            "title": node.get("_meta", {}).get("title", info.get("display_name", node["class_type"])),
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
        })
    for l in links:  # UI links address target slots by index
        target = next(n for n in nodes if n["id"] == l[3])
        l[4] = next(i for i, inp in enumerate(target["inputs"]) if inp["name"] == l[4])
    return {"last_node_id": len(nodes), "last_link_id": link_id, "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("api")
    ap.add_argument("out")
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    args = ap.parse_args()
    info = requests.get(f"{args.url}/object_info", timeout=60).json()
    ui = api_to_ui(json.loads(Path(args.api).read_text()), info)
    Path(args.out).write_text(json.dumps(ui, indent=1))


if __name__ == "__main__":
    main()
