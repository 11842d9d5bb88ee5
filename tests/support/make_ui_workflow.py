"""Make the UI-format (LiteGraph) workflows of workflows/ from their API twins in tests/e2e/prompts/.

Each UI file is drawn from one API prompt, a layout of this file (left-to-right groups of columns,
one group per stage) and a running server's /object_info (widget order, socket types), so it always
matches the nodes as registered. UI node ids are the API prompt's keys: the frontend's graphToPrompt
gives back the very prompt the e2e tests queue (tests/e2e/test_e2e_ui.py checks that, the layout and
the widget values in the real frontend).

    python tests/support/make_ui_workflow.py --url http://127.0.0.1:8188             # all workflows
    python tests/support/make_ui_workflow.py --url ... aniportrait_stage1            # one
    python tests/support/make_ui_workflow.py --url ... --thumbnails                  # also workflows/<name>.jpg

The server must have this pack loaded (tests/support/comfy_server.py starts one). ``--thumbnails`` runs a
small prompt on it (the landmarker only, no diffusion) for real pose images, using the inputs of
example_inputs/.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTS = REPO_ROOT / "tests" / "e2e" / "prompts"
WORKFLOWS = REPO_ROOT / "workflows"
EXAMPLE_INPUTS = REPO_ROOT / "example_inputs"

# frontend-only widget values that follow certain inputs in widgets_values
CONTROL_AFTER_GENERATE = "fixed"
UPLOAD_EXTRA = {"LoadImage": ["image"], "LoadAudio": [None, None], "LoadVideo": ["image"]}

# LiteGraph geometry (litegraph: NODE_TITLE_HEIGHT 30, NODE_SLOT_HEIGHT 20, widgets 20 + 4 margin)
TITLE_H = 30
SLOT_H = 20
WIDGET_H = 24
GROUP_TITLE_H = 50
GROUP_PAD = 20
COLUMN_GAP = 60
GROUP_GAP = 70
ROW_GAP = 40
COLUMN_W = 340
# nodes that show media below their widgets, or have extra DOM widgets: a size that shows them
MEDIA_SIZE = {"LoadImage": (340, 360), "PreviewImage": (340, 340), "SaveImage": (340, 340), "LoadVideo": (340, 440),
              "LoadAudio": (340, 150), "SaveVideo": (340, 340)}
WIDE = {"AniPortraitSampler": 320, "AniPortraitLoadVideoModel": 320, "AniPortraitVideoConditioning": 320, "CLIPVisionLoader": 320,
        "VAELoader": 320}

GROUP_COLOURS = {"inputs": "#3f789e", "motion": "#8A8", "pose": "#b58b2a", "video": "#a1309b", "crop": "#8AA", "note": "#444"}

MODEL_LINES = {
    "AniPortraitLoadAudioModels": ("`audio2mesh.pt`, `audio2pose.pt` → `models/aniportrait/`", "hf"),
    "AniPortraitLoadVideoModel": ("`reference_unet.pth`, `denoising_unet.pth`, `motion_module.pth`, "
                                  "`pose_guider.pth` → `models/aniportrait/`", "hf"),
    "AniPortraitLoadFaceLandmarker": (
        "`face_landmarker.task` → `models/aniportrait/`, from "
        "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/latest/face_landmarker.task", None),
    "VAELoader": ("VAE of [stabilityai/sd-vae-ft-mse](https://huggingface.co/stabilityai/sd-vae-ft-mse) "
                  "saved as `models/vae/sd-vae-ft-mse.safetensors`", None),
    "CLIPVisionLoader": ("image encoder (`image_encoder/`) of [lambdalabs/sd-image-variations-diffusers]"
                         "(https://huggingface.co/lambdalabs/sd-image-variations-diffusers/tree/main/image_encoder) "
                         "saved as `models/clip_vision/sd-image-variations-image-encoder.safetensors`", None),
}

#: name -> (what it does, groups). A group: (title, colour key, columns); a column: API node ids, top to bottom.
LAYOUTS: dict[str, tuple[str, list[tuple[str, str, list[list[str]]]]]] = {
    "aniportrait_stage1": (
        "Speech + portrait → lip-coloured pose images and a pose video (stage 1, no diffusion).",
        [
            ("Your inputs", "inputs", [["1", "2"]]),
            ("1 · Audio → motion", "motion", [["3", "4", "5"], ["6", "7", "8"]]),
            ("2 · Motion → pose images and a pose video", "pose", [["9", "10"], ["11"], ["12", "13"]]),
        ],
    ),
    "aniportrait_audio2video": (
        "Speech + portrait → talking-head video: audio → motion → pose images → video diffusion.",
        [
            ("Your inputs", "inputs", [["1", "2"]]),
            ("1 · Audio → motion", "motion", [["3", "4", "5"], ["6", "7", "8"]]),
            ("2 · Motion → landmarks", "pose", [["9", "10"], ["21"]]),
            ("3 · Landmarks → video", "video", [["14", "15", "16"], ["22"], ["17"], ["18", "20"]]),
        ],
    ),
    "aniportrait_audio2video_ksampler": (
        "Speech + portrait → talking-head video on ComfyUI's own KSampler: the AniPortrait MODEL with core Context "
        "Windows (dim 2, looped_uniform, closed loop, flat). Swap in any core sampler, scheduler or model patch; "
        "**AniPortrait Context Windows** instead of the core node keeps the original's fixed windows.",
        [
            ("Your inputs", "inputs", [["1", "2"]]),
            ("1 · Audio → motion", "motion", [["3", "4", "5"], ["6", "7", "8"]]),
            ("2 · Motion → landmarks", "pose", [["9", "10"], ["21"]]),
            ("3 · Landmarks → video (core sampling)", "video", [["14", "15", "16"], ["22", "23"], ["17"], ["18", "20"]]),
        ],
    ),
    "aniportrait_pose_template": (
        "Lips from the speech, head motion copied from a video (a pose template, also saved as .npy).",
        [
            ("Your inputs", "inputs", [["1", "2", "8"]]),
            ("1 · Audio + video → motion", "motion", [["3", "4", "5"], ["6", "7"], ["10", "11"], ["12"]]),
            ("2 · Motion → pose images and a pose video", "pose", [["13", "14"], ["15"], ["16", "17"]]),
        ],
    ),
    "aniportrait_reenactment": (
        "Face reenactment: the driving video's expressions and head motion on your portrait, as pose images. "
        "For a video, feed the landmarks to **AniPortrait Video Conditioning** and **AniPortrait Sampler** as in the "
        "*aniportrait_audio2video* template.",
        [
            ("Your inputs", "inputs", [["1", "8"]]),
            ("1 · Driving video → motion", "motion", [["4", "5"], ["12"]]),
            ("2 · Motion → pose images and a pose video", "pose", [["10", "13"], ["11"], ["14", "15"]]),
        ],
    ),
    "aniportrait_photo_paste_back": (
        "A whole photo + speech → a video at the photo's own size: the face is cropped like AniPortrait's training "
        "data, animated (head motion toned down, blinks added) and pasted back into the photo. **A drawing or an anime "
        "face** that the landmarker cannot read: add **AniPortrait Face From Points** on the photo (five points), connect "
        "its face to Face Crop's `face` input, and take Face Crop's `crop_face` where Face Analysis' face goes "
        "(Audio2Mesh, Edit Motion, Add Blinks, Project Landmarks).",
        [
            ("Your inputs", "inputs", [["1", "2"]]),
            ("1 · Photo → face crop", "crop", [["3", "4"], ["5"]]),
            ("2 · Audio → motion, edited", "motion", [["6", "7", "8"], ["9", "10"], ["11"]]),
            ("3 · Motion → pose images", "pose", [["12", "13"], ["14"]]),
            ("4 · Landmarks → video, pasted back", "video", [["15", "16", "17"], ["23"], ["18"], ["19", "22"]]),
        ],
    ),
    "aniportrait_dubbing": (
        "Dubbing: a video + new speech → the video at its own size and frame rate with the new speech: the face "
        "follows the video's head and the speech's lips. The video is read from disk as needed (any length) and "
        "looped back and forth to the speech's length.",
        [
            ("Your inputs", "inputs", [["1", "2"]]),
            ("1 · Video on the speech's timeline → face crops", "crop", [["4", "5"], ["6"], ["8"]]),
            ("2 · Speech + video head → motion", "motion", [["9", "10", "11"], ["12"]]),
            ("3 · Motion → pose images", "pose", [["13", "14"], ["15"]]),
            ("4 · Landmarks → video, pasted back", "video", [["16", "17", "18"], ["24"], ["19"], ["20", "23"]]),
        ],
    ),
    "aniportrait_two_speakers": (
        "Two people in one picture, one speech track each: both faces are cropped (Face Crop picks each by "
        "face_index, left to right), animated, and pasted back one after the other into the one picture. Each "
        "track is silent while the other person speaks, and Audio2Mesh rests the mouth in those pauses.",
        [
            ("Your inputs", "inputs", [["1", "2", "3"]]),
            ("Models", "note", [["4", "5"], ["6", "7", "8"]]),
            ("1 · Left person (face_index 0)", "crop", [["10", "11"], ["12", "13", "14"], ["15"], ["16"]]),
            ("2 · Right person (face_index 1)", "motion", [["20", "21"], ["22", "23", "24"], ["25"], ["26"]]),
            ("3 · Both pasted back, with both tracks", "video", [["30", "31"], ["32", "33"]]),
        ],
    ),
}

NOTE_ID = 100
NOTE_SIZE = (420, 520)


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


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def note_text(api: dict, summary: str) -> str:
    loaders = {node["class_type"] for node in api.values()}
    lines = [f"## {summary}", "", "**Model files** (then press **R** to refresh the lists):", ""]
    hf = False
    for cls, (line, src) in MODEL_LINES.items():
        if cls in loaders:
            if cls == "AniPortraitLoadAudioModels" and all(
                    n["inputs"].get("audio2pose_name") == "none" for n in api.values() if n["class_type"] == cls):
                line = line.replace(", `audio2pose.pt`", "")  # head motion from elsewhere: no Audio2Pose loaded
            lines.append(f"* {line}" + (" — from the AniPortrait release" if src == "hf" else ""))
            hf = hf or src == "hf"
    if hf:
        lines += ["", "AniPortrait release: [ZJYang/AniPortrait](https://huggingface.co/ZJYang/AniPortrait) on Hugging Face."]
    lines += ["", "**Inputs**: the nodes titled *Your …* / *pick …* are yours to choose. Example files ship in this "
              "pack's `example_inputs/` folder: copy them into `ComfyUI/input/` to run the workflow as it opens."]
    return "\n".join(lines)


#: the frontend widens a node to fit its title: about this many pixels per character, plus the title's padding
TITLE_CHAR_W, TITLE_PAD = 8, 50


def _node_size(cls: str, info: dict, n_sockets: int, n_widgets: int, title: str) -> list[int]:
    rows = max(n_sockets, len(info["output"]))
    h = rows * SLOT_H + (n_widgets * WIDGET_H + 14 if n_widgets else 6)
    w, min_h = MEDIA_SIZE.get(cls, (WIDE.get(cls, COLUMN_W), 0))
    return [max(w, TITLE_CHAR_W * len(title) + TITLE_PAD), max(h, min_h)]


def api_to_ui(api: dict, object_info: dict, name: str | None = None) -> dict:
    """The laid-out UI workflow of the API prompt ``api`` (``name``: its layout; found from ``api`` if omitted)."""
    if name is None:
        name = next(n for n in LAYOUTS if (PROMPTS / f"{n}_api.json").is_file()
                    and json.loads((PROMPTS / f"{n}_api.json").read_text()) == api)
    summary, groups_layout = LAYOUTS[name]
    placed = [nid for _, _, cols in groups_layout for col in cols for nid in col]
    assert sorted(placed) == sorted(api), f"{name}: layout places {sorted(placed)}, prompt has {sorted(api)}"

    links, nodes = [], {}
    link_id = 0
    out_links: dict[tuple[int, int], list[int]] = {}
    in_link: dict[tuple[int, str], int] = {}
    for key, node in api.items():  # links in prompt order: stable ids
        info = object_info[node["class_type"]]
        for inp, _, _ in _inputs_in_order(info):
            value = node["inputs"].get(inp)
            if _is_link(value):
                link_id += 1
                src_type = object_info[api[value[0]]["class_type"]]["output"][value[1]]
                links.append([link_id, int(value[0]), value[1], int(key), inp, src_type])
                out_links.setdefault((int(value[0]), value[1]), []).append(link_id)
                in_link[(int(key), inp)] = link_id
    for order, (key, node) in enumerate(api.items()):
        nid, cls = int(key), node["class_type"]
        info = object_info[cls]
        inputs, widgets, n_sockets, n_widgets = [], [], 0, 0
        for inp, kind, opts in _inputs_in_order(info):
            value = node["inputs"].get(inp)
            lid = in_link.get((nid, inp))
            if _is_widget(kind, opts):
                # the frontend adds the control widget also to INT inputs named seed / noise_seed (AniPortrait Add Blinks)
                control = bool(opts.get("control_after_generate")) or (kind == "INT" and inp in ("seed", "noise_seed"))
                n_widgets += 1 + control
                widgets.append(opts.get("default") if value is None or lid else value)
                if control:
                    widgets.append(CONTROL_AFTER_GENERATE)
                if lid:
                    inputs.append({"name": inp, "type": "COMBO" if isinstance(kind, list) else kind,
                                   "widget": {"name": inp}, "link": lid})
            else:
                n_sockets += 1
                inputs.append({"name": inp, "type": kind, "link": lid})
        widgets += UPLOAD_EXTRA.get(cls, [])
        n_widgets += len(UPLOAD_EXTRA.get(cls, []))
        outputs = [{"name": oname, "type": otype, "links": out_links.get((nid, i), []), "slot_index": i}
                   for i, (oname, otype) in enumerate(zip(info["output_name"], info["output"]))]
        title = node.get("_meta", {}).get("title", info.get("display_name", cls))
        nodes[key] = {
            "id": nid, "type": cls, "pos": [0, 0], "size": _node_size(cls, info, n_sockets, n_widgets, title),
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
            "title": title,
            "properties": {"Node name for S&R": cls}, "widgets_values": widgets,
        }
    for l in links:  # UI links address target slots by index
        target = nodes[str(l[3])]
        l[4] = next(i for i, inp in enumerate(target["inputs"]) if inp["name"] == l[4])

    # layout: the note, then one group per stage, left to right; columns top to bottom
    note = {"id": NOTE_ID, "type": "MarkdownNote", "pos": [0, TITLE_H], "size": list(NOTE_SIZE), "flags": {},
            "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "title": "Read me: models and inputs",
            "properties": {}, "widgets_values": [note_text(api, summary)], "color": "#432", "bgcolor": "#653"}
    x = NOTE_SIZE[0] + GROUP_GAP
    top = 0
    groups = []
    for title, colour, cols in groups_layout:
        gx = x
        x += GROUP_PAD
        bottom = 0
        for col in cols:
            y = top + GROUP_TITLE_H + TITLE_H
            width = max(nodes[k]["size"][0] for k in col)
            for k in col:
                nodes[k]["pos"] = [x, y]
                nodes[k]["size"][0] = width
                y += nodes[k]["size"][1] + ROW_GAP + TITLE_H
            bottom = max(bottom, y - ROW_GAP - TITLE_H)
            x += width + COLUMN_GAP
        x += GROUP_PAD - COLUMN_GAP
        groups.append({"title": title, "bounding": [gx, top, x - gx, bottom + GROUP_PAD - top],
                       "color": GROUP_COLOURS[colour], "font_size": 24, "flags": {}})
        x += GROUP_GAP
    height = max(g["bounding"][3] for g in groups)
    for g in groups:  # one band: all groups as tall as the tallest
        g["bounding"][3] = height
    for i, g in enumerate(groups, 1):
        g["id"] = i
    ui_nodes = list(nodes.values()) + [note]
    return {"last_node_id": max(n["id"] for n in ui_nodes),
            "last_link_id": link_id, "nodes": ui_nodes, "links": links, "groups": groups, "config": {},
            "extra": {"ds": {"scale": 0.5, "offset": [20, 20]}}, "version": 0.4}


def write_workflow(name: str, object_info: dict) -> Path:
    api = json.loads((PROMPTS / f"{name}_api.json").read_text())
    out = WORKFLOWS / f"{name}.json"
    out.write_text(json.dumps(api_to_ui(api, object_info, name), indent=1) + "\n")
    return out


# ----------------------------------------------------------------------------- thumbnails


def _run(url: str, prompt: dict) -> dict:
    import time

    r = requests.post(f"{url}/prompt", json={"prompt": prompt}, timeout=60)
    r.raise_for_status()
    pid = r.json()["prompt_id"]
    for _ in range(600):
        h = requests.get(f"{url}/history/{pid}", timeout=30).json()
        if pid in h:
            return h[pid]
        time.sleep(0.5)
    raise TimeoutError(pid)


def _fetch(url: str, entry: dict):
    import io

    from PIL import Image

    r = requests.get(f"{url}/view", params={"filename": entry["filename"], "subfolder": entry["subfolder"],
                                            "type": entry["type"]}, timeout=60)
    r.raise_for_status()
    return Image.open(io.BytesIO(r.content)).convert("RGB")


def _compose_panels(url: str) -> dict:
    """Thumbnail tiles of the crop / paste-back workflows: the input, its face crop, the crop's pose image."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "aniportrait_photo.png"}},
        "2": {"class_type": "AniPortraitLoadFaceLandmarker", "inputs": {"model_name": "face_landmarker.task"}},
        "3": {"class_type": "AniPortraitFaceCrop", "inputs": {"face_landmarker": ["2", 0], "image": ["1", 0], "width": 512, "height": 512,
                                                              "scale": 2.0, "vertical_offset": 0.0, "smoothing": 9,
                                                              "on_missing": "interpolate", "pad": "edge"}},
        "4": {"class_type": "AniPortraitFaceAnalysis", "inputs": {"face_landmarker": ["2", 0], "image": ["3", 0], "width": 512, "height": 512}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["4", 1]}},
        "11": {"class_type": "LoadVideo", "inputs": {"file": "dubbing_source.mp4"}},
        "12": {"class_type": "GetVideoComponents", "inputs": {"video": ["11", 0]}},
        "13": {"class_type": "ImageFromBatch", "inputs": {"image": ["12", 0], "batch_index": 0, "length": 1}},
        "14": {"class_type": "AniPortraitFaceCrop", "inputs": {**prompt_crop_inputs(), "face_landmarker": ["2", 0], "image": ["13", 0]}},
        "15": {"class_type": "AniPortraitFaceAnalysis", "inputs": {"face_landmarker": ["2", 0], "image": ["14", 0], "width": 512, "height": 512}},
        "16": {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}},
        "17": {"class_type": "PreviewImage", "inputs": {"images": ["14", 0]}},
        "18": {"class_type": "PreviewImage", "inputs": {"images": ["15", 1]}},
    }
    h = _run(url, prompt)
    first = {k: _fetch(url, h["outputs"][k]["images"][0]) for k in ("5", "6", "16", "17", "18")}
    from PIL import Image

    photo = Image.open(EXAMPLE_INPUTS / "aniportrait_photo.png").convert("RGB")
    panels = {"aniportrait_photo_paste_back": [photo, first["5"], first["6"]],
              "aniportrait_dubbing": [first["16"], first["17"], first["18"]]}
    two = {"1": {"class_type": "LoadImage", "inputs": {"image": "aniportrait_two_people.png"}}, "2": prompt["2"]}
    for i in (0, 1):
        two[f"3{i}"] = {"class_type": "AniPortraitFaceCrop", "inputs": {**prompt_crop_inputs(), "face_landmarker": ["2", 0],
                                                                       "image": ["1", 0], "which_face": "index", "face_index": i}}
        two[f"4{i}"] = {"class_type": "AniPortraitFaceAnalysis", "inputs": {"face_landmarker": ["2", 0], "image": [f"3{i}", 0],
                                                                           "width": 512, "height": 512}}
        two[f"5{i}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"4{i}", 1]}}
    h = _run(url, two)
    picture = Image.open(EXAMPLE_INPUTS / "aniportrait_two_people.png").convert("RGB")
    panels["aniportrait_two_speakers"] = [picture] + [_fetch(url, h["outputs"][f"5{i}"]["images"][0]) for i in (0, 1)]
    return panels


def prompt_crop_inputs() -> dict:
    return {"width": 512, "height": 512, "scale": 2.0, "vertical_offset": 0.0, "smoothing": 9, "on_missing": "interpolate", "pad": "edge"}


def make_thumbnails(url: str, names: list[str]) -> None:
    """workflows/<name>.jpg: what goes in and what comes out (real pose images of the example inputs)."""
    from PIL import Image, ImageDraw

    portrait = "aniportrait_reference.png"
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": portrait}},
        "4": {"class_type": "AniPortraitLoadFaceLandmarker", "inputs": {"model_name": "face_landmarker.task"}},
        "5": {"class_type": "AniPortraitFaceAnalysis", "inputs": {"face_landmarker": ["4", 0], "image": ["1", 0], "width": 512, "height": 512}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 1]}},
    }
    reenact = json.loads((PROMPTS / "aniportrait_reenactment_api.json").read_text())
    save = next(k for k, n in reenact.items() if n["class_type"] == "SaveImage")
    reenact[save] = {"class_type": "PreviewImage", "inputs": reenact[save]["inputs"]}
    video = next(k for k, n in reenact.items() if n["class_type"] == "LoadVideo")
    reenact["89"] = {"class_type": "GetVideoComponents", "inputs": {"video": [video, 0]}}  # the thumbnail's frames only
    reenact["90"] = {"class_type": "PreviewImage", "inputs": {"images": ["89", 0]}}
    h1, h2 = _run(url, prompt), _run(url, reenact)
    ref_pose = _fetch(url, h1["outputs"]["6"]["images"][0])
    mid = len(h2["outputs"][save]["images"]) // 2
    drive_pose = _fetch(url, h2["outputs"][save]["images"][mid])
    drive_frame = _fetch(url, h2["outputs"]["90"]["images"][mid])
    photo = Image.open(EXAMPLE_INPUTS / portrait).convert("RGB")
    # the pose images keep the original's BGR order; show them as the model sees them
    panels = {
        "aniportrait_stage1": [photo, ref_pose],
        "aniportrait_audio2video": [photo, ref_pose],
        "aniportrait_audio2video_ksampler": [photo, ref_pose],
        "aniportrait_pose_template": [photo, ref_pose],
        "aniportrait_reenactment": [drive_frame, drive_pose],
    }
    labels = {"aniportrait_stage1": "speech + portrait -> pose images",
              "aniportrait_audio2video": "speech + portrait -> pose images -> video",
              "aniportrait_audio2video_ksampler": "speech + portrait -> landmarks -> KSampler video",
              "aniportrait_pose_template": "speech + head-motion video -> pose images",
              "aniportrait_reenactment": "driving video -> pose images on your portrait"}
    if {"aniportrait_photo_paste_back", "aniportrait_dubbing", "aniportrait_two_speakers"} & set(names):
        panels.update(_compose_panels(url))
        labels["aniportrait_two_speakers"] = "two people + two speech tracks -> both faces' pose images -> one video"
        labels["aniportrait_photo_paste_back"] = "speech + whole photo -> face crop -> pose images -> pasted back"
        labels["aniportrait_dubbing"] = "video + new speech -> face crops -> pose images -> dubbed video"
    for name in names:
        tiles = panels[name]
        size = 256
        card = Image.new("RGB", (size * len(tiles) + 16 * (len(tiles) - 1), size + 40), (24, 24, 28))
        draw = ImageDraw.Draw(card)
        for i, tile in enumerate(tiles):
            card.paste(tile.resize((size, size), Image.BILINEAR), (i * (size + 16), 0))
            if i:
                ax = i * (size + 16) - 8
                draw.polygon([(ax - 6, size // 2 - 10), (ax + 6, size // 2), (ax - 6, size // 2 + 10)], fill=(240, 240, 240))
        draw.text((8, size + 12), f"AniPortrait: {labels[name]}", fill=(235, 235, 235))
        card.save(WORKFLOWS / f"{name}.jpg", quality=88)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", help="workflow base names (default: all of LAYOUTS)")
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    ap.add_argument("--thumbnails", action="store_true", help="also make workflows/<name>.jpg (runs prompts on the server)")
    args = ap.parse_args()
    names = args.names or list(LAYOUTS)
    info = requests.get(f"{args.url}/object_info", timeout=60).json()
    for name in names:
        print(write_workflow(name, info))
    if args.thumbnails:
        make_thumbnails(args.url, names)


if __name__ == "__main__":
    main()
