"""AniPortrait for ComfyUI: registers the pack's nodes (and nothing else).

Exports ``comfy_entrypoint`` (V3) and ``WEB_DIRECTORY``, whose ``docs/<node id>.md`` pages the frontend (>= 1.22)
shows as each node's help; the guard lets tools import the package outside ComfyUI.
"""
WEB_DIRECTORY = "./web"

try:
    import comfy.utils  # noqa: F401
except ImportError:  # imported outside ComfyUI (tests, scripts): no nodes to register
    pass
else:
    from .nodes import comfy_entrypoint  # noqa: F401
