"""Where the key goes: only to fal, or to a server the owner of this ComfyUI allowed.

Every outgoing HTTP request of a run is listed (at httpx's lowest transport, which
every client uses), and a stranger's server on 127.0.0.1 records what reaches it.
"""

from __future__ import annotations

import httpx
import pytest

from conftest import TEST_KEY, run_node, sample_image
from servers import FalJsProxy, Recorder

from comfyui_fal_edit.nodes import egress, server_settings
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.settings import FalSettings
from fal_emulator import FalEmulator

FAL_CLIENT_GLOBALS = ("QUEUE_URL_FORMAT", "RUN_URL_FORMAT", "REST_URL", "CDN_URL")


@pytest.fixture
def outgoing(monkeypatch):
    """Every request any httpx client sends from this process: (url, headers)."""
    sent: list[tuple[str, dict]] = []
    send = httpx.AsyncHTTPTransport.handle_async_request

    async def recorded(self, request):
        sent.append((str(request.url), dict(request.headers)))
        return await send(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", recorded)
    return sent


@pytest.fixture
def stranger():
    with Recorder() as server:
        yield server


def fal_client_globals() -> dict:
    import fal_client.client as fc
    return {name: getattr(fc, name) for name in FAL_CLIENT_GLOBALS}


def keyed_requests_outside(sent, *allowed_origins: str) -> list[str]:
    """Requests carrying the user's key to a host that is neither fal's nor allowed."""
    allowed = {egress.origin(url) for url in allowed_origins}
    return [url for url, headers in sent
            if any(TEST_KEY in value for value in headers.values())
            and not egress.is_fal_url(url) and egress.origin(url) not in allowed]


@pytest.mark.parametrize("with_key", [True, False])
def test_a_strangers_base_url_gets_nothing(fal, stranger, outgoing, monkeypatch, with_key):
    if not with_key:
        monkeypatch.delenv("FAL_KEY")
    before = fal_client_globals()
    settings = FalSettings(base_url=stranger.base_url)
    with pytest.raises(FalNodeError) as err:
        run_node("FalColorCorrection", image=sample_image(32, 32), settings=settings)
    message = str(err.value)
    assert f"base_url 127.0.0.1:{stranger.port}" in message and "Settings → fal" in message
    assert "\n" not in message
    assert stranger.requests == [] and outgoing == [] and fal.state.log == []
    assert fal_client_globals() == before


def test_an_allowed_server_gets_the_run_and_fal_client_is_left_alone(fal, outgoing):
    before = fal_client_globals()
    with FalEmulator() as allowed:
        server_settings.update({"allowed_servers": [allowed.base_url]})
        images, _, urls = run_node("FalColorCorrection", image=sample_image(32, 32),
                                   settings=FalSettings(base_url=allowed.base_url))
        assert images.shape[0] == 1 and urls.startswith(allowed.base_url + "files/")
        assert allowed.state.count("submit") == 1 and allowed.state.count("upload") == 1
    assert fal.state.count("submit") == 0 and fal.state.count("upload") == 0
    assert outgoing and keyed_requests_outside(outgoing, allowed.base_url) == []
    assert fal_client_globals() == before
    # The next run without base_url goes where the owner said (here the env server).
    run_node("FalColorCorrection", image=sample_image(32, 32, seed=3))
    assert fal.state.count("submit") == 1
    assert fal_client_globals() == before


def test_the_env_server_needs_no_allowed_list(fal, outgoing):
    images, _, _ = run_node("FalColorCorrection", image=sample_image(32, 32, seed=4),
                            settings=FalSettings(base_url=fal.base_url.rstrip("/")))
    assert images.shape[0] == 1 and fal.state.count("submit") == 1
    assert keyed_requests_outside(outgoing, fal.base_url) == []


@pytest.mark.asyncio
async def test_credentials_to_any_other_host_are_refused_before_sending(stranger):
    """A server may answer with URLs that point anywhere (status_url, upload URLs):
    with the key they go nowhere but fal or the destination."""
    for destination in (egress.FAL, egress.Destination("server", "http://127.0.0.1:9/"),
                        egress.Destination("proxy", "http://127.0.0.1:9/api/fal/proxy/")):
        async with httpx.AsyncClient(transport=egress.egress_transport(destination)) as http:
            for header in ({"Authorization": f"Key {TEST_KEY}"},
                           {"Authorization": "Bearer cdn-token"}):
                with pytest.raises(egress.EgressRefused, match=f"127.0.0.1:{stranger.port}"):
                    await http.get(stranger.base_url + "queue/x/status", headers=header)
            plain = await http.get(stranger.base_url + "files/x.png")   # no credentials: fine
            assert plain.status_code == 404
    assert len(stranger.requests) == 3
    assert stranger.with_key(TEST_KEY) == [] and stranger.with_key("cdn-token") == []


def test_fal_urls_map_onto_each_layout():
    server = egress.Destination("server", "http://127.0.0.1:8765/")
    assert server.route("https://queue.fal.run/fal-ai/x/requests/1/status") == \
        ("http://127.0.0.1:8765/queue/fal-ai/x/requests/1/status", {})
    assert server.route("https://rest.fal.ai/storage/auth/token?storage_type=fal-cdn-v3")[0] == \
        "http://127.0.0.1:8765/rest/storage/auth/token?storage_type=fal-cdn-v3"
    assert server.route("https://v3.fal.media/files/upload")[0] == \
        "http://127.0.0.1:8765/cdn/files/upload"
    assert server.route("https://api.fal.ai/v1/models/pricing?endpoint_id=a")[0] == \
        "http://127.0.0.1:8765/v1/models/pricing?endpoint_id=a"
    proxy = egress.Destination("proxy", "https://me.example/api/fal/proxy/")
    assert proxy.route("https://fal.run/fal-ai/x") == \
        ("https://me.example/api/fal/proxy", {"x-fal-target-url": "https://fal.run/fal-ai/x"})
    assert proxy.route("http://fal.run/fal-ai/x")[0] == "http://fal.run/fal-ai/x"   # not https
    assert not egress.is_fal_url("https://fal.run.evil.example/")
    assert egress.is_fal_url("https://queue.fal.run/x") and egress.is_fal_url("https://fal.ai")


def test_server_urls_are_compared_in_one_spelling(fal, monkeypatch):
    server_settings.update({"allowed_servers": ["HTTP://LocalHost:80/fal"]})
    assert egress.resolve("http://localhost/fal/") == \
        egress.Destination("server", "http://localhost/fal/")
    for refused in ("http://localhost:81/fal", "https://localhost/fal", "http://localhost/",
                    "http://user@localhost/fal"):
        with pytest.raises(egress.EgressRefused):
            egress.resolve(refused)


# -- the fal-js proxy protocol ---------------------------------------------------------

PROXY_KEY = "proxy-own-key-3e1c9a7b-44"


@pytest.fixture
def proxy(fal, monkeypatch):
    with FalJsProxy(fal.base_url, PROXY_KEY) as server:
        monkeypatch.delenv("COMFYUI_FAL_BASE_URL")
        monkeypatch.setenv("COMFYUI_FAL_PROXY_URL", server.url)
        yield server


def test_runs_through_a_fal_js_proxy_send_no_key(fal, proxy, outgoing, statuses):
    """FAL_KEY is set, yet through a proxy the pack sends no key: the proxy adds its own."""
    images, _, urls = run_node("FalFluxDevImageToImage", image=sample_image(48, 32, batch=2),
                               num_images=2, prompt="a duck")
    assert images.shape[0] == 4 and len(urls.splitlines()) == 4
    targets = [r["headers"].get("x-fal-target-url") for r in proxy.requests]
    fal_bound = [t for t in targets if t]
    assert any(t.startswith("https://queue.fal.run/fal-ai/flux/dev/image-to-image")
               for t in fal_bound)
    assert any(t.startswith("https://rest.fal.ai/storage/upload/initiate") for t in fal_bound)
    assert all(egress.is_fal_url(t) for t in fal_bound)
    assert not any("authorization" in r["headers"] for r in proxy.requests)
    assert proxy.with_key(TEST_KEY) == [] and keyed_requests_outside(outgoing) == []
    # fal (the emulator) saw the proxy's key, never the user's.
    hints = {e.get("key_hint") for e in fal.state.log if e.get("key_hint")}
    assert hints == {PROXY_KEY[-4:]}
    assert fal.state.count("submit") == 2


def test_a_proxy_needs_no_key_at_all(fal, proxy, monkeypatch):
    monkeypatch.delenv("FAL_KEY")
    images, _, _ = run_node("FalColorCorrection", image=sample_image(32, 32, seed=8))
    assert images.shape[0] == 1 and fal.state.count("submit") == 1


def test_a_proxy_saved_in_settings_is_used(fal, monkeypatch):
    with FalJsProxy(fal.base_url, PROXY_KEY) as server:
        monkeypatch.delenv("COMFYUI_FAL_BASE_URL")
        server_settings.update({"proxy_url": server.url})
        run_node("FalColorCorrection", image=sample_image(32, 32, seed=9))
        assert any(r["headers"].get("x-fal-target-url") for r in server.requests)
    assert fal.state.count("submit") == 1


def test_prices_never_come_from_a_server_the_workflow_picked(fal):
    """Even an allowed one: the price list is fal's (or the owner's own server's)."""
    with FalEmulator() as allowed:
        server_settings.update({"allowed_servers": [allowed.base_url]})
        run_node("FalColorCorrection", image=sample_image(32, 32, seed=11),
                 settings=FalSettings(base_url=allowed.base_url))
        assert allowed.state.count("pricing") == 0 and allowed.state.count("submit") == 1
    run_node("FalColorCorrection", image=sample_image(32, 32, seed=12))
    assert fal.state.count("pricing") == 1


def test_another_pack_moving_fal_client_globals_cannot_take_the_key(fal, stranger, monkeypatch):
    """The other way round: another pack points fal-client's module globals at a server of
    its own; this pack's key still goes nowhere but fal or the owner's server."""
    import fal_client.client as fc
    from fal_emulator import client_globals
    for name, value in client_globals(stranger.base_url).items():
        monkeypatch.setattr(fc, name, value)
    with pytest.raises(FalNodeError, match=f"credentials to 127.0.0.1:{stranger.port}"):
        run_node("FalColorCorrection", image=sample_image(32, 32, seed=13))
    assert stranger.with_key(TEST_KEY) == []


def test_egress_transport_and_owner_settings_import_one_way_only():
    """server_settings <- egress <- fal_transport, with the shared address helpers in a leaf
    (addresses.py): no import between them goes back up, even one inside a function."""
    import ast
    from pathlib import Path
    nodes = Path(__file__).resolve().parents[1] / "nodes"
    trio = {"egress", "fal_transport", "server_settings", "addresses"}
    graph: dict[str, set[str]] = {}
    for name in trio:
        tree = ast.parse((nodes / f"{name}.py").read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {a.name for a in node.names}
        graph[name] = found & trio
    assert graph["addresses"] == set()
    assert graph["server_settings"] <= {"addresses"}
    assert "fal_transport" not in graph["egress"] and "egress" not in graph["server_settings"]
