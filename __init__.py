"""fal image editing for ComfyUI: ten fal.ai image-editing endpoints as nodes.

Importing this package touches no network and does no heavy work; fal-client is
imported on first use.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
