"""fal image editing for ComfyUI: ten fal.ai image-editing endpoints as nodes.

Importing this package touches no network and does no heavy work; fal-client is
imported on first use.
"""

import sys

if not __package__:
    # Imported as a plain file, not as ComfyUI's package: pytest does that from a checkout
    # whose folder name is not a Python name (`comfyui-fal-edit`). There are no relative
    # imports to resolve then, and the tests load the pack themselves (tools/pack_loader.py).
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# The front end's fal panels talk to routes on ComfyUI's server. ComfyUI imports
# its `server` before loading custom nodes; anywhere else (tests, the demo) there
# is no server, and importing aiohttp for nothing would cost ~0.3 s.
if __package__ and "server" in sys.modules:
    try:
        from .nodes.routes import register_with_comfyui
    except ImportError:  # aiohttp missing: no key panel, the nodes still work
        pass
    else:
        register_with_comfyui()
    # The templates' Load Image nodes name the shipped samples: put them in ComfyUI's input
    # folder (only where absent; local copies, errors only logged).
    from .nodes.samples import copy_samples_to_input
    copy_samples_to_input()

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
