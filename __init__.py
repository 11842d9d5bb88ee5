"""AniPortrait for ComfyUI: registers the pack's nodes (and nothing else).

Only exports ``comfy_entrypoint`` (V3); the guard lets tools import the package outside ComfyUI.
"""
try:
    import comfy.utils  # noqa: F401
except ImportError:  # imported outside ComfyUI (tests, scripts): no nodes to register
    pass
else:
    from .nodes import comfy_entrypoint  # noqa: F401
