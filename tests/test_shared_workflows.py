"""Workflows come from other people: a key name the recipient lacks explains itself."""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import types

import pytest

from conftest import ROOT, pack

from comfyui_fal_edit.nodes import keystore

FalKey = pack.NODE_CLASS_MAPPINGS["FalKey"]
ENV_CHOICE = "environment FAL_KEY"


@pytest.fixture
def keys(tmp_path, monkeypatch):
    monkeypatch.setenv(keystore.ENV_KEY_FILE, str(tmp_path / "keys.json"))
    monkeypatch.delenv(keystore.ENV_KEY, raising=False)
    keystore.add("home", "home-key-0123456789abcdef-0000")
    return monkeypatch


def test_comfyui_leaves_the_key_name_check_to_the_node():
    # ComfyUI's execution.validate_inputs skips its "Value not in list" check for an input
    # that VALIDATE_INPUTS names in its signature, and reports the string it returns.
    assert "key_name" in inspect.getfullargspec(FalKey.VALIDATE_INPUTS).args


def test_a_key_name_this_server_lacks_is_one_sentence_with_the_fix(keys):
    message = FalKey.VALIDATE_INPUTS(key_name="studio")
    # ComfyUI puts the node and the input in front: "fal Key ... key_name - this workflow ..."
    assert message == ("this workflow uses a fal key named 'studio', which is not saved "
                       "on this ComfyUI server; add your key under that name in Settings → fal, "
                       "or pick 'environment FAL_KEY' in this node to use the FAL_KEY environment "
                       "variable once it is set.")
    keys.setenv(keystore.ENV_KEY, "env-key-0123456789abcdef-1111")
    message = FalKey.VALIDATE_INPUTS(key_name="studio")
    assert message.endswith("to use this server's FAL_KEY environment variable.")
    assert "env-key" not in message and "1111" not in message


def test_saved_names_and_the_environment_choice_pass(keys):
    assert FalKey.VALIDATE_INPUTS(key_name="home") is True
    assert FalKey.VALIDATE_INPUTS(key_name=ENV_CHOICE) is True
    assert ENV_CHOICE in FalKey.INPUT_TYPES()["required"]["key_name"][0]


# -- templates run as loaded: the samples are in ComfyUI's input folder --------------------

SAMPLE_NAMES = ["sample_duckling.png", "sample_portrait.png"]


def load_pack_inside_comfyui(monkeypatch, input_dir):
    """Import the pack's __init__.py as ComfyUI does: `server` and `folder_paths` exist."""
    server = types.ModuleType("server")
    server.PromptServer = type("PromptServer", (), {"instance": None})
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_input_directory = lambda: str(input_dir)
    folder_paths.get_user_directory = lambda: str(input_dir.parent / "user")
    monkeypatch.setitem(sys.modules, "server", server)
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    name = "fal_pack_inside_comfyui"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    try:
        spec.loader.exec_module(module)
    finally:
        for loaded in [m for m in sys.modules if m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
    return module


def test_loading_the_pack_in_comfyui_puts_the_samples_in_its_input_folder(monkeypatch, tmp_path):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    mine = input_dir / "sample_portrait.png"
    mine.write_bytes(b"the user's own picture")
    load_pack_inside_comfyui(monkeypatch, input_dir)
    assert sorted(p.name for p in input_dir.iterdir()) == SAMPLE_NAMES
    assert mine.read_bytes() == b"the user's own picture"          # never overwritten
    shipped = ROOT / "example_workflows" / "input" / "sample_duckling.png"
    assert (input_dir / "sample_duckling.png").read_bytes() == shipped.read_bytes()
    # Every template's Load Image asks for a shipped sample.
    for workflow in (ROOT / "example_workflows").glob("*.json"):
        for node in json.loads(workflow.read_text())["nodes"]:
            if node["type"] == "LoadImage":
                assert node["widgets_values"][0] in SAMPLE_NAMES, workflow.name


def test_copying_the_samples_never_fails_the_load(tmp_path, caplog):
    from comfyui_fal_edit.nodes.samples import copy_samples_to_input
    blocked = tmp_path / "input"
    blocked.write_text("a file where the folder should be")
    assert copy_samples_to_input(blocked) == []
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "could not copy the sample images" in warning.getMessage()
    folder = tmp_path / "fine"
    assert copy_samples_to_input(folder) == SAMPLE_NAMES
    assert copy_samples_to_input(folder) == []                     # already there
