"""fal image editing for ComfyUI: ten fal.ai image-editing endpoints as nodes.

Importing this package touches no network and does no heavy work; fal-client is
imported on first use.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# The front end's fal key panel talks to routes on ComfyUI's server; outside
# ComfyUI (tests, the demo) there is no server to add them to.
try:
    from .nodes.routes import register_with_comfyui
except ImportError:  # aiohttp missing: no key panel, the nodes still work
    pass
else:
    register_with_comfyui()

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
