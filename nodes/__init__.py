"""The pack's code. Everything here uses relative imports: ComfyUI has its own `nodes`."""

from .node_classes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
