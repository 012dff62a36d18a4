"""Named keys: one 0600 file, names only in graphs, the key read from stdin."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, pack

from comfyui_fal_edit.nodes import keystore
from comfyui_fal_edit.nodes.settings import FalKeyRef, MissingKey, resolve_key

SECRET = "abcd1234-5678-90ef-SECRET-KEY-9f2c"


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    path = tmp_path / "user" / "comfyui-fal-edit" / "keys.json"
    monkeypatch.setenv("COMFYUI_FAL_KEYS_FILE", str(path))
    return path


def test_add_list_delete_and_file_mode(key_file):
    keystore.add("work", SECRET)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert keystore.names() == ["work"]
    assert keystore.listing() == [{"name": "work", "hint": "…9f2c"}]
    assert keystore.get("work") == SECRET
    assert resolve_key(FalKeyRef("work")) == SECRET
    assert keystore.delete("work") is True
    assert keystore.names() == [] and keystore.delete("work") is False
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["", "  ", "../etc", "a" * 41, "na\nme", "-x"])
def test_bad_names_are_refused(key_file, name):
    with pytest.raises(keystore.KeyStoreError, match="key name"):
        keystore.add(name, SECRET)
    assert not key_file.exists()


@pytest.mark.parametrize("key", ["", "   ", "short", "has space inside the key", "x" * 300])
def test_bad_keys_are_refused(key_file, key):
    with pytest.raises(keystore.KeyStoreError):
        keystore.add("work", key)


def test_key_node_outputs_the_name_only(key_file):
    keystore.add("work", SECRET)
    key_node = pack.NODE_CLASS_MAPPINGS["FalKey"]
    choices = key_node.INPUT_TYPES()["required"]["key_name"][0]
    assert choices == ["environment FAL_KEY", "work"]
    (ref,) = key_node().choose("work")
    assert ref == FalKeyRef("work") and SECRET not in repr(ref)
    (env_ref,) = key_node().choose("environment FAL_KEY")
    assert env_ref.name is None
    settings = pack.NODE_CLASS_MAPPINGS["FalSettings"]().build(
        4, 600, "error", "png", False, "use", "", key=ref)[0]
    assert SECRET not in repr(settings)


def test_whitespace_env_key_is_missing(monkeypatch):
    monkeypatch.setenv("FAL_KEY", "   ")
    with pytest.raises(MissingKey, match="no fal key is set"):
        resolve_key(FalKeyRef())


def test_corrupt_key_file_is_explained(key_file):
    key_file.parent.mkdir(parents=True)
    key_file.write_text("{not json")
    with pytest.raises(MissingKey, match="cannot be read"):
        resolve_key(FalKeyRef("work"))
    assert keystore.names() == []   # INPUT_TYPES must not crash ComfyUI's start-up


def test_cli_reads_the_key_from_stdin_never_argv(key_file):
    script = ROOT / "nodes" / "keystore.py"
    env = {**os.environ, "COMFYUI_FAL_KEYS_FILE": str(key_file)}
    done = subprocess.run([sys.executable, str(script), "add", "work"], input=SECRET + "\n",
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr and "…9f2c" in done.stdout
    assert json.loads(key_file.read_text())["keys"]["work"] == SECRET
    listed = subprocess.run([sys.executable, str(script), "list"], capture_output=True,
                            text=True, env=env, timeout=30)
    assert listed.stdout.strip() == "work\t…9f2c"
    bad = subprocess.run([sys.executable, str(script), "add", "work2"], input="\n",
                         capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 1 and "empty" in bad.stderr


def test_default_location_is_beside_comfyui_user_folders(monkeypatch):
    monkeypatch.delenv("COMFYUI_FAL_KEYS_FILE", raising=False)
    path = keystore.key_file()
    assert path.name == "keys.json" and path.parent.name == "comfyui-fal-edit"
    assert path.parent.parent.name == "user"
    # Not inside ComfyUI's per-user folder (user/default), which /userdata serves.
    assert "default" not in Path(path).parts


@pytest.mark.parametrize("content", ['{"keys": null}', "[]", '["work"]', '"a string"', "7",
                                     '{"keys": ["work"]}', '{"keys": {"work": 5}}', "{}"])
def test_key_file_of_the_wrong_shape_is_explained_and_kept(key_file, content):
    key_file.parent.mkdir(parents=True)
    key_file.write_text(content)
    with pytest.raises(keystore.KeyStoreError, match="does not hold named keys"):
        keystore.get("work")
    with pytest.raises(MissingKey, match="does not hold named keys"):
        resolve_key(FalKeyRef("work"))
    assert keystore.names() == []   # the fal Key node's list still loads
    with pytest.raises(keystore.KeyStoreError, match="nothing was changed"):
        keystore.add("work", SECRET)
    with pytest.raises(keystore.KeyStoreError):
        keystore.delete("work")
    assert key_file.read_text() == content     # nothing overwritten
    script = ROOT / "nodes" / "keystore.py"
    env = {**os.environ, "COMFYUI_FAL_KEYS_FILE": str(key_file)}
    for args in (["list"], ["add", "work"]):
        done = subprocess.run([sys.executable, str(script), *args], input=SECRET + "\n",
                              capture_output=True, text=True, env=env, timeout=30)
        assert done.returncode == 1 and done.stderr.startswith("error: the key file")
        assert "Traceback" not in done.stderr and SECRET not in done.stdout + done.stderr
    assert key_file.read_text() == content


ADD_MANY = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("keystore", sys.argv[1])
keystore = importlib.util.module_from_spec(spec); spec.loader.exec_module(keystore)
for i in range(int(sys.argv[3])):
    keystore.add(f"{sys.argv[2]}-{i}", f"key-{sys.argv[2]}-{i:04d}-abcdefgh")
"""


def test_two_processes_adding_keys_at_once_lose_none(key_file):
    script = str(ROOT / "nodes" / "keystore.py")
    env = {**os.environ, "COMFYUI_FAL_KEYS_FILE": str(key_file)}
    workers = [subprocess.Popen([sys.executable, "-c", ADD_MANY, script, who, "150"], env=env,
                                stderr=subprocess.PIPE, text=True) for who in ("a", "b")]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read()
    names = keystore.names()
    assert len(names) == 300 and keystore.get("b-149") == "key-b-0149-abcdefgh"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in key_file.parent.iterdir()] == ["keys.json"]
