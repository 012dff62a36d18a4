"""What the owner decides on the server (server_settings.json beside the keys), and the
routes the Settings → fal panel edits it with."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from conftest import ROOT

from comfyui_fal_edit.nodes import egress, keystore, routes, server_settings


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    path = tmp_path / "user" / "comfyui-fal-edit" / "keys.json"
    monkeypatch.setenv(keystore.ENV_KEY_FILE, str(path))
    return path


@pytest_asyncio.fixture
async def client(key_file):
    async with TestClient(TestServer(routes.make_app())) as c:
        yield c


async def call(client, method, body=None, **headers):
    response = await client.request(method, "/fal/server-settings", json=body, headers=headers)
    return response.status, await response.json()


@pytest.mark.asyncio
async def test_defaults_then_partial_updates(client, key_file):
    status, body = await call(client, "GET")
    assert status == 200
    body.pop("in_force")   # below
    assert body == {"allowed_servers": [], "proxy_url": "", "max_usd_per_prompt": 5.0,
                    "max_usd_per_day": 20.0, "cache_max_gb": 2.0, "spent_today": 0.0}
    status, body = await call(client, "POST", {"allowed_servers": [
        "HTTP://Proxy.Example:8080/fal", "http://proxy.example:8080/fal/", "https://b.example:443"],
        "max_usd_per_day": 50})
    assert status == 200
    assert body["allowed_servers"] == ["http://proxy.example:8080/fal/", "https://b.example/"]
    assert body["max_usd_per_day"] == 50.0 and body["max_usd_per_prompt"] == 5.0
    status, again = await call(client, "POST", {**body, "cache_max_gb": 3})   # sent back whole
    assert status == 200 and again["cache_max_gb"] == 3.0
    assert server_settings.load()["allowed_servers"] == body["allowed_servers"]
    saved = key_file.parent / "server_settings.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    assert "spent_today" not in json.loads(saved.read_text())


@pytest.mark.asyncio
async def test_the_server_in_force_is_named_with_where_it_comes_from(client, key_file, monkeypatch):
    """Settings → fal → Server names the server runs go to; it said "only fal's own hosts"
    while COMFYUI_FAL_BASE_URL sent every run elsewhere."""
    monkeypatch.delenv(egress.ENV_BASE_URL, raising=False)
    monkeypatch.delenv(egress.ENV_PROXY_URL, raising=False)
    assert (await call(client, "GET"))[1]["in_force"] == {"kind": "fal", "url": "", "from": ""}
    monkeypatch.setenv(egress.ENV_BASE_URL, "http://127.0.0.1:8765")
    assert (await call(client, "GET"))[1]["in_force"] == {
        "kind": "server", "url": "http://127.0.0.1:8765/", "from": "COMFYUI_FAL_BASE_URL"}
    status, body = await call(client, "POST", {"max_usd_per_day": 30})
    assert status == 200 and body["in_force"]["from"] == "COMFYUI_FAL_BASE_URL"
    monkeypatch.delenv(egress.ENV_BASE_URL)
    status, body = await call(client, "POST", {"proxy_url": "http://proxy.example:3000/api/fal/proxy",
                                               "in_force": {"kind": "fal"}})   # sent back: ignored
    assert status == 200
    assert body["in_force"] == {"kind": "proxy", "url": "http://proxy.example:3000/api/fal/proxy/",
                                "from": "proxy_url"}
    monkeypatch.setenv(egress.ENV_PROXY_URL, "ftp://nope")
    in_force = (await call(client, "GET"))[1]["in_force"]
    assert in_force["kind"] == "error" and "not a server URL" in in_force["error"]


@pytest.mark.parametrize("body, fragment", [
    ({"max_usd_per_prompt": -1}, "max_usd_per_prompt"),
    ({"max_usd_per_day": "10"}, "max_usd_per_day"),
    ({"cache_max_gb": 0}, "cache_max_gb"),
    ({"cache_max_gb": 1e9}, "cache_max_gb"),
    ({"allowed_servers": "http://a.example/"}, "list"),
    ({"allowed_servers": ["ftp://a.example/"]}, "not a server URL"),
    ({"allowed_servers": ["http://user:pw@a.example/"]}, "not a server URL"),
    ({"proxy_url": 5}, "proxy_url"),
    ({"colour": "red"}, "unknown setting"),
])
@pytest.mark.asyncio
async def test_bad_values_are_one_sentence_and_nothing_is_saved(client, key_file, body, fragment):
    status, answer = await call(client, "POST", body)
    assert status == 400 and fragment in answer["error"] and "\n" not in answer["error"]
    assert not (key_file.parent / "server_settings.json").exists()


@pytest.mark.asyncio
async def test_other_sites_cannot_change_them(client, key_file):
    status, _ = await call(client, "POST", {"allowed_servers": ["http://evil.example/"]},
                           Origin="http://evil.example")
    assert status == 403 and server_settings.load()["allowed_servers"] == []


def test_a_damaged_file_means_the_defaults(key_file):
    key_file.parent.mkdir(parents=True)
    path = key_file.parent / "server_settings.json"
    for content in ("{oops", "[]", '{"allowed_servers": "http://evil.example/"}'):
        path.write_text(content)
        assert server_settings.load() == server_settings.DEFAULTS


def test_spend_by_day_survives_a_restart(key_file):
    server_settings.add_spend(0.25)
    server_settings.add_spend(0.5)
    server_settings.add_spend(float("nan"))
    server_settings.add_spend(-3)
    assert server_settings.spent_today() == pytest.approx(0.75)
    path = key_file.parent / server_settings.SPEND_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(json.loads(path.read_text()).values()) == [0.75]


def test_owners_without_the_front_end_use_the_cli(key_file):
    script = str(ROOT / "nodes" / "keystore.py")
    env = {**os.environ, keystore.ENV_KEY_FILE: str(key_file)}

    def cli(*args):
        return subprocess.run([sys.executable, script, "settings", *args], capture_output=True,
                              text=True, env=env, timeout=60)

    shown = cli()
    assert shown.returncode == 0 and json.loads(shown.stdout)["max_usd_per_prompt"] == 5.0
    assert cli("allow", "http://Proxy.Example:8080/fal").returncode == 0
    assert cli("max_usd_per_day=50", "cache_max_gb=3").returncode == 0
    assert server_settings.load()["allowed_servers"] == ["http://proxy.example:8080/fal/"]
    assert server_settings.load()["max_usd_per_day"] == 50.0
    assert cli("disallow", "http://proxy.example:8080/fal/").returncode == 0
    assert server_settings.load()["allowed_servers"] == []
    bad = cli("max_usd_per_day=-1")
    assert bad.returncode == 1 and bad.stderr.startswith("error: `max_usd_per_day`")
    assert "Traceback" not in bad.stderr and server_settings.load()["max_usd_per_day"] == 50.0
