"""A checkout named as the repository is (`comfyui-fal-edit`, not a Python name) still runs
the tests: pytest then imports the root `__init__.py` as a plain file, which must not fail
on its relative imports."""

from __future__ import annotations

import importlib.util

from conftest import ROOT


def test_the_root_init_imports_as_a_plain_file():
    spec = importlib.util.spec_from_file_location("__init__", ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # raised "attempted relative import" before
    assert module.NODE_CLASS_MAPPINGS == {} and module.WEB_DIRECTORY == "./web"
