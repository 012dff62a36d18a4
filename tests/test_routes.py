"""The fal key routes behind the front end's key panel, run on a bare aiohttp app."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from comfyui_fal_edit.nodes import keystore, routes, server_settings
from comfyui_fal_edit.nodes.node_classes import ENV_CHOICE, FalKey

GOOD_KEY = "goodkey-4c1f7e2a:0b9d63e8a5f14c7d9e2b-Q7wX"
BAD_KEY = "badkey-91d2c3e4:5f6a7b8c9d0e1f2a3b4c-Z3kM"


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    path = tmp_path / "user" / "comfyui-fal-edit" / "keys.json"
    monkeypatch.setenv(keystore.ENV_KEY_FILE, str(path))
    monkeypatch.delenv(keystore.ENV_KEY, raising=False)
    return path


@pytest_asyncio.fixture
async def client(key_file):
    async with TestClient(TestServer(routes.make_app())) as c:
        yield c


@pytest.fixture
def seen(capture_logs):
    """Every response body and every log line, to scan for keys."""
    return capture_logs   # the routes' tests add response bodies to it


async def call(client, seen, method, path, body=None, **headers):
    kwargs = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    response = await client.request(method, path, **kwargs)
    text = await response.text()
    seen.append(text)
    return response.status, json.loads(text)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_no_key(texts: list[str], *keys: str) -> None:
    """No key, and no 8-character piece of one, shows up anywhere."""
    blob = "\n".join(texts)
    for key in keys:
        for i in range(len(key) - 7):
            assert key[i:i + 8] not in blob, f"a piece of a key leaked: {key[i:i + 8]!r}"


# -- add / list / delete --------------------------------------------------------

@pytest.mark.asyncio
async def test_add_list_delete(client, seen, key_file):
    status, body = await call(client, seen, "GET", "/fal/keys")
    assert status == 200 and body["keys"] == []
    assert body["env"] == {"choice": ENV_CHOICE, "set": False, "hint": ""}

    status, body = await call(client, seen, "POST", "/fal/keys", {"name": "work", "key": GOOD_KEY})
    assert status == 201 and body["added"] == "work" and body["replaced"] is False
    assert body["keys"] == [{"name": "work", "hint": "…" + GOOD_KEY[-4:]}]

    await call(client, seen, "POST", "/fal/keys", {"name": "home 2", "key": BAD_KEY})
    status, body = await call(client, seen, "GET", "/fal/keys")
    assert [k["name"] for k in body["keys"]] == ["home 2", "work"]
    assert keystore.get("work") == GOOD_KEY          # stored whole, server-side only

    status, body = await call(client, seen, "POST", "/fal/keys", {"name": "work", "key": BAD_KEY})
    assert status == 200 and body["replaced"] is True and keystore.get("work") == BAD_KEY

    status, body = await call(client, seen, "DELETE", "/fal/keys/home%202")
    assert status == 200 and body["deleted"] == "home 2"
    assert [k["name"] for k in body["keys"]] == ["work"]
    status, body = await call(client, seen, "DELETE", "/fal/keys/home%202")
    assert status == 404 and "no fal key named 'home 2'" in body["error"]
    assert_no_key(seen, GOOD_KEY, BAD_KEY)


@pytest.mark.asyncio
async def test_routes_also_answer_the_fal_key_node(client, seen):
    """The FalKey node's combo (what /object_info sends) lists what the routes saved."""
    await call(client, seen, "POST", "/fal/keys", {"name": "studio", "key": GOOD_KEY})
    assert FalKey.INPUT_TYPES()["required"]["key_name"][0] == [ENV_CHOICE, "studio"]
    await call(client, seen, "DELETE", "/fal/keys/studio")
    assert FalKey.INPUT_TYPES()["required"]["key_name"][0] == [ENV_CHOICE]
    assert routes.ENV_CHOICE == ENV_CHOICE


@pytest.mark.asyncio
async def test_key_file_is_private(client, seen, key_file):
    await call(client, seen, "POST", "/fal/keys", {"name": "work", "key": GOOD_KEY})
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key_file.parent).st_mode) == 0o700
    assert json.loads(key_file.read_text())["keys"] == {"work": GOOD_KEY}
    leftovers = [p.name for p in key_file.parent.iterdir() if p.name != "keys.json"]
    assert leftovers == []


@pytest.mark.asyncio
async def test_environment_key_is_shown_masked(client, seen, monkeypatch):
    monkeypatch.setenv("FAL_KEY", GOOD_KEY)
    status, body = await call(client, seen, "GET", "/fal/keys")
    assert body["env"] == {"choice": ENV_CHOICE, "set": True, "hint": "…" + GOOD_KEY[-4:]}
    assert_no_key(seen, GOOD_KEY)


# -- bad input --------------------------------------------------------------------

@pytest.mark.parametrize("body, fragment", [
    ({"name": "", "key": GOOD_KEY}, "a key name is 1 to 40"),
    ({"name": "   ", "key": GOOD_KEY}, "a key name is 1 to 40"),
    ({"name": "../etc/passwd", "key": GOOD_KEY}, "a key name is 1 to 40"),
    ({"name": "x" * 41, "key": GOOD_KEY}, "a key name is 1 to 40"),
    ({"name": "work", "key": ""}, "the key is empty"),
    ({"name": "work", "key": "   "}, "the key is empty"),
    ({"name": "work", "key": "short"}, "does not look like a fal key"),
    ({"name": "work", "key": "has a space inside it"}, "does not look like a fal key"),
    ({"name": "work"}, "the key is empty"),
    ({"name": 7, "key": GOOD_KEY}, "`name` must be a string"),
    ({"name": "work", "key": ["a"]}, "`key` must be a string"),
])
@pytest.mark.asyncio
async def test_bad_input_is_explained(client, seen, key_file, body, fragment):
    status, answer = await call(client, seen, "POST", "/fal/keys", body)
    assert status == 400 and fragment in answer["error"]
    assert not key_file.exists()
    assert_no_key(seen, GOOD_KEY)


@pytest.mark.asyncio
async def test_body_must_be_a_json_object(client, seen, key_file):
    for data, content_type, fragment in [
        ("name=work&key=" + GOOD_KEY, "application/x-www-form-urlencoded", "send JSON"),
        ("{not json", "application/json", "not valid JSON"),
        ('["work"]', "application/json", "send a JSON object"),
        ("{}", "text/plain", "send JSON"),
    ]:
        response = await client.post("/fal/keys", data=data,
                                      headers={"Content-Type": content_type})
        text = await response.text()
        seen.append(text)
        assert response.status == 400 and fragment in json.loads(text)["error"], data
    assert not key_file.exists()
    assert_no_key(seen, GOOD_KEY)


@pytest.mark.asyncio
async def test_delete_and_test_check_the_name(client, seen):
    status, body = await call(client, seen, "DELETE", "/fal/keys/bad%21")
    assert status == 400 and "a key name is" in body["error"]
    status, body = await call(client, seen, "POST", "/fal/keys/test", {"name": "nobody"})
    assert status == 404 and "no fal key named 'nobody'" in body["error"]
    status, body = await call(client, seen, "POST", "/fal/keys/test", {"name": ENV_CHOICE})
    assert status == 404 and "FAL_KEY environment variable is not set" in body["error"]


# -- origin -----------------------------------------------------------------------

@pytest.mark.parametrize("method, path, body", [
    ("GET", "/fal/keys", None),
    ("POST", "/fal/keys", {"name": "evil", "key": BAD_KEY}),
    ("POST", "/fal/keys/test", {"name": "work"}),
    ("DELETE", "/fal/keys/work", None),
])
@pytest.mark.asyncio
async def test_foreign_origin_is_refused(client, seen, key_file, method, path, body):
    keystore.add("work", GOOD_KEY)
    for headers in ({"Origin": "http://evil.example"},
                    {"Origin": "http://127.0.0.1:1"},            # another port on this host
                    {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}):
        status, answer = await call(client, seen, method, path, body, **headers)
        assert status == 403 and answer["error"].startswith("refused:"), headers
    assert keystore.names() == ["work"] and keystore.get("work") == GOOD_KEY
    assert_no_key(seen, GOOD_KEY, BAD_KEY)


@pytest.mark.asyncio
async def test_own_origin_is_accepted(client, seen, monkeypatch):
    host = f"{client.host}:{client.port}"
    status, _ = await call(client, seen, "POST", "/fal/keys", {"name": "work", "key": GOOD_KEY},
                           Origin=f"http://{host}", **{"Sec-Fetch-Site": "same-origin"})
    assert status == 201
    # A reverse proxy on the default port, under a name the owner allowed: Host without a
    # port, Origin without one either.
    monkeypatch.setenv(routes.ENV_ALLOWED_HOSTS, "other.example, comfy.example")
    status, _ = await call(client, seen, "GET", "/fal/keys", Origin="https://comfy.example",
                           Host="comfy.example")
    assert status == 200


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/fal/keys", None),
    ("POST", "/fal/keys", {"name": "work", "key": BAD_KEY}),
    ("DELETE", "/fal/keys/work", None),
    ("GET", "/fal/spend", None),
    ("GET", "/fal/server-settings", None),
    ("POST", "/fal/server-settings", {"allowed_servers": ["http://evil.example/"]}),
])
@pytest.mark.asyncio
async def test_dns_rebinding_is_refused(client, seen, key_file, method, path, body):
    """A stranger's name resolving to 127.0.0.1: the page sends that name as Host and
    Origin alike, so the two agree; the name itself gives it away."""
    keystore.add("work", GOOD_KEY)
    for name in ("evil.example", f"evil.example:{client.port}"):
        status, answer = await call(client, seen, method, path, body, Host=name,
                                    Origin=f"http://{name}")
        assert status == 403 and "evil.example" in answer["error"], (name, answer)
    assert keystore.get("work") == GOOD_KEY
    assert server_settings.load()["allowed_servers"] == []
    assert_no_key(seen, GOOD_KEY, BAD_KEY)
    # Loopback, localhost and IP addresses cannot be rebound: they still answer.
    for name in (f"127.0.0.1:{client.port}", f"localhost:{client.port}",
                 f"192.168.1.20:{client.port}", f"[::1]:{client.port}"):
        status, _ = await call(client, seen, "GET", "/fal/keys", Host=name,
                               Origin=f"http://{name}")
        assert status == 200, name


def test_foreign_origin_rules():
    class Req:
        def __init__(self, **headers):
            self.headers = headers

    assert routes.foreign_origin(Req(Host="127.0.0.1:8188")) is None
    assert routes.foreign_origin(Req(Host="127.0.0.1:8188", Origin="http://127.0.0.1:8188")) is None
    assert routes.foreign_origin(Req(Host="LOCALHOST:8188", Origin="http://localhost:8188")) is None
    assert routes.foreign_origin(Req(Host="localhost:8188", Origin="http://127.0.0.1:8188"))
    assert routes.foreign_origin(Req(Host="127.0.0.1:8188", Origin="http://127.0.0.1.evil.io"))
    assert routes.foreign_origin(Req(Host="127.0.0.1:8188", Origin="file://"))
    # Origins compare by scheme, host and port, default ports filled in.
    assert routes.foreign_origin(Req(Host="127.0.0.1:8188", Origin="http://127.0.0.1"))
    assert routes.foreign_origin(Req(Host="127.0.0.1:80", Origin="http://127.0.0.1")) is None
    assert routes.foreign_origin(Req(Host="127.0.0.1", Origin="http://127.0.0.1:80")) is None
    assert routes.foreign_origin(Req(Host="127.0.0.1:443", Origin="http://127.0.0.1"))
    assert routes.foreign_origin(Req(Host="comfy.example", Origin="https://comfy.example")) \
        is None
    assert routes.foreign_origin(Req(Host="127.0.0.1:8188", Origin="ftp://127.0.0.1:8188"))


# -- test ---------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_key_check_against_the_emulator(client, seen, emulator):
    await call(client, seen, "POST", "/fal/keys", {"name": "good", "key": GOOD_KEY})
    await call(client, seen, "POST", "/fal/keys", {"name": "bad", "key": BAD_KEY})
    emulator.state.configure(rejected_keys=[BAD_KEY])

    status, body = await call(client, seen, "POST", "/fal/keys/test", {"name": "good"})
    assert status == 200 and body["result"] == "valid" and body["name"] == "good"
    assert body["message"].startswith("fal accepted the key")

    status, body = await call(client, seen, "POST", "/fal/keys/test", {"name": "bad"})
    assert status == 200 and body["result"] == "rejected"
    assert "answered 401" in body["message"] and "fal.ai/dashboard/keys" in body["message"]

    emulator.state.configure(forbidden_keys=[GOOD_KEY])
    status, body = await call(client, seen, "POST", "/fal/keys/test", {"name": "good"})
    assert body["result"] == "rejected" and "answered 403" in body["message"]

    # One call each, to the cheap token route, with the key in the Authorization header.
    tokens = emulator.state.entries("token")
    assert [t["key_hint"] for t in tokens] == [GOOD_KEY[-4:], BAD_KEY[-4:], GOOD_KEY[-4:]]
    assert {t["path"] for t in tokens} == {"/rest/storage/auth/token"}
    assert ". " not in body["message"] and "\n" not in body["message"]      # one sentence
    assert_no_key(seen, GOOD_KEY, BAD_KEY)


@pytest.mark.asyncio
async def test_environment_key_can_be_tested(client, seen, emulator, monkeypatch):
    monkeypatch.setenv("FAL_KEY", GOOD_KEY)
    status, body = await call(client, seen, "POST", "/fal/keys/test", {"name": ENV_CHOICE})
    assert status == 200 and body["result"] == "valid" and body["name"] == ENV_CHOICE
    assert_no_key(seen, GOOD_KEY)


@pytest.mark.asyncio
async def test_key_check_when_fal_is_unreachable(client, seen, monkeypatch):
    monkeypatch.setenv("COMFYUI_FAL_BASE_URL", f"http://127.0.0.1:{closed_port()}/")
    await call(client, seen, "POST", "/fal/keys", {"name": "good", "key": GOOD_KEY})
    status, body = await call(client, seen, "POST", "/fal/keys/test", {"name": "good"})
    assert status == 200 and body["result"] == "unreachable"
    assert "could not be reached (ConnectError)" in body["message"]
    assert_no_key(seen, GOOD_KEY)


@pytest.mark.asyncio
async def test_key_check_when_fal_fails(client, seen, emulator):
    emulator.state.add_fault("token", 503)
    await call(client, seen, "POST", "/fal/keys", {"name": "good", "key": GOOD_KEY})
    status, body = await call(client, seen, "POST", "/fal/keys/test", {"name": "good"})
    assert body["result"] == "unreachable" and "answered 503" in body["message"]


@pytest.mark.asyncio
async def test_key_check_times_out(emulator, monkeypatch):
    emulator.state.configure(stall_s=5.0)
    emulator.state.add_fault("token", "stall")
    result, message = await routes.check_key_with_fal(GOOD_KEY, timeout_s=0.3)
    assert result == "unreachable" and "did not answer within 0.3s" in message


def test_target_follows_the_base_url(monkeypatch):
    monkeypatch.delenv("COMFYUI_FAL_BASE_URL", raising=False)
    assert routes.rest_url() == "https://rest.fal.ai"
    monkeypatch.setenv("COMFYUI_FAL_BASE_URL", "http://127.0.0.1:9999")
    assert routes.rest_url() == "http://127.0.0.1:9999/rest"


@pytest.mark.asyncio
async def test_nothing_of_a_key_reaches_responses_or_logs(client, seen, emulator, key_file):
    """Every route, every outcome: responses and log lines carry names and hints only."""
    emulator.state.configure(rejected_keys=[BAD_KEY])
    await call(client, seen, "POST", "/fal/keys", {"name": "good", "key": GOOD_KEY})
    await call(client, seen, "POST", "/fal/keys", {"name": "bad", "key": BAD_KEY})
    await call(client, seen, "POST", "/fal/keys", {"name": "bad!", "key": GOOD_KEY})
    await call(client, seen, "POST", "/fal/keys", {"name": "ok", "key": GOOD_KEY + " x"})
    await call(client, seen, "GET", "/fal/keys")
    await call(client, seen, "POST", "/fal/keys/test", {"name": "good"})
    await call(client, seen, "POST", "/fal/keys/test", {"name": "bad"})
    await call(client, seen, "POST", "/fal/keys", {"name": "x", "key": GOOD_KEY},
               Origin="http://evil.example")
    await call(client, seen, "DELETE", "/fal/keys/bad")
    await call(client, seen, "GET", "/fal/keys")
    assert any("fal key 'good' tested: valid" in s for s in seen)
    assert any("refused POST /fal/keys" in s for s in seen)
    assert_no_key(seen, GOOD_KEY, BAD_KEY)
    # The emulator logs only the last four characters, like fal's hint.
    assert_no_key([json.dumps(emulator.state.entries(), default=str)], GOOD_KEY, BAD_KEY)


def test_routes_register_only_inside_comfyui():
    assert routes.register_with_comfyui() is False       # no `server` module here


@pytest.mark.asyncio
async def test_a_key_file_of_the_wrong_shape_is_one_sentence(client, seen, key_file):
    key_file.parent.mkdir(parents=True)
    key_file.write_text('{"keys": null}')
    status, answer = await call(client, seen, "GET", "/fal/keys")
    assert status == 500 and "does not hold named keys" in answer["error"]
    status, answer = await call(client, seen, "POST", "/fal/keys", {"name": "w", "key": GOOD_KEY})
    assert status == 400 and "nothing was changed" in answer["error"]
    assert key_file.read_text() == '{"keys": null}'
    assert FalKey.INPUT_TYPES()["required"]["key_name"][0] == [ENV_CHOICE]


# -- off ComfyUI's event loop ---------------------------------------------------------

@pytest.mark.asyncio
async def test_key_and_settings_files_are_touched_off_the_event_loop(client, seen, key_file,
                                                                     monkeypatch):
    """The routes run on ComfyUI's own event loop; the key file and the owner's settings sit
    under a lock another process may hold for seconds, so no read or write of them (nor of
    the catalogue file) may happen on the loop's thread."""
    import threading

    from comfyui_fal_edit.nodes import catalogue

    loop_thread = threading.current_thread()
    on_loop: list[str] = []

    def watched(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            if threading.current_thread() is loop_thread:
                owner = getattr(module, "__name__", type(module).__name__)
                on_loop.append(f"{owner.rsplit('.', 1)[-1]}.{name}")
            return original(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    for name in ("read_json", "write_private_json", "locked"):
        watched(keystore, name)
    watched(catalogue, "entry")
    # Prices: stale and unread, so /fal/prices reads the price file, the owner's settings
    # and the key file to start a refresh and a lookup. Neither is sent anywhere here.
    from comfyui_fal_edit.nodes import pricing
    monkeypatch.delenv("FAL_KEY", raising=False)
    pricing.prices.clear()
    watched(pricing.prices, "_load_disk")
    started: list[str] = []

    async def look_up(key, destination, endpoint_id):
        started.append(f"lookup {endpoint_id} with {'a key' if key else 'no key'}")

    monkeypatch.setattr(pricing.prices, "fetch_one", look_up)
    monkeypatch.setattr(pricing.price_refresh, "start", lambda key, destination, force=False:
                        started.append(f"refresh with {'a key' if key else 'no key'}"))
    seedream = "fal-ai/bytedance/seedream/v4.5/edit"   # in the catalogue, no shipped price
    calls = [("POST", "/fal/keys", {"name": "studio", "key": GOOD_KEY}),
             ("GET", f"/fal/prices?endpoint_id={seedream}&endpoint_id=fal-ai/flux/dev", None),
             ("GET", "/fal/keys", None),
             ("POST", "/fal/keys/test", {"name": "nobody"}),
             ("DELETE", "/fal/keys/studio", None),
             ("GET", "/fal/server-settings", None),
             ("POST", "/fal/server-settings", {"max_usd_per_day": 12}),
             ("GET", "/fal/catalogue/fal-ai/image-editing/color-correction", None)]
    for method, path, body in calls:
        status, _ = await call(client, seen, method, path, body)
        assert status < 500, (method, path)
    assert not on_loop, f"on the event loop: {sorted(set(on_loop))}"
    # The price work did reach the files (the saved key) and started what it should.
    assert started == [f"lookup {seedream} with a key",
                       "refresh with a key"]
