"""Load this repository as the ComfyUI package it is, outside ComfyUI.

ComfyUI imports a custom node pack by its folder; everything inside uses
relative imports. Tests, the demo and the benchmark load it the same way under
a fixed name.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui_fal_edit"


def load_pack(root: Path = ROOT):
    """The pack at `root` (this checkout by default; the benches' --pack names another, to
    measure older code with today's script)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module
