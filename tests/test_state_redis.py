"""Several ComfyUI workers sharing one state on a real Redis server (tests/redis_server.py).

A second worker is this process with everything in memory dropped and its own folders
(cache, key file, settings): what it finds can only have come through Redis.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import TEST_KEY, run_node, sample_image

from comfyui_fal_edit.nodes import caches as caches_mod
from comfyui_fal_edit.nodes import pricing, server_settings, state
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.settings import FalSettings

TESTS = Path(__file__).resolve().parent


def become_another_worker(monkeypatch, tmp_path: Path, name: str) -> None:
    """What a fresh worker on another machine has: nothing in memory, empty folders."""
    caches_mod.caches.forget_memory()
    caches_mod.caches.clear()
    pricing.ledger.clear()
    monkeypatch.setenv("COMFYUI_FAL_CACHE_DIR", str(tmp_path / name / "cache"))
    monkeypatch.setenv("COMFYUI_FAL_KEYS_FILE", str(tmp_path / name / "keys" / "keys.json"))


def priced(fal) -> None:
    """The emulator's price list ($0.05 an image for colour correction)."""
    asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))


def all_redis_bytes(server) -> list[bytes]:
    """Every key name and every value in the server, whatever its type."""
    client = server.client()
    out: list[bytes] = []
    for db in (0, 1):
        client.execute_command("SELECT", db)
        for key in client.scan_iter(count=1000):
            out.append(key)
            kind = client.type(key).decode()
            if kind == "string":
                out.append(client.get(key))
            elif kind == "hash":
                for field, value in client.hgetall(key).items():
                    out += [field, value]
            elif kind == "zset":
                out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == "set":
                out += list(client.smembers(key))
            elif kind == "list":
                out += client.lrange(key, 0, -1)
    client.close()
    return out


# -- what is shared ------------------------------------------------------------------

def test_a_result_bought_on_one_worker_is_free_on_another(fal, shared_state, monkeypatch,
                                                          tmp_path, statuses):
    image = sample_image(64, 48, batch=2, seed=101)
    first, _, _ = run_node("FalColorCorrection", image=image, seed=5)
    assert fal.state.count("submit") == 2 and fal.state.count("upload") == 2
    become_another_worker(monkeypatch, tmp_path, "b")
    again, _, _ = run_node("FalColorCorrection", image=image, seed=5)
    assert torch.equal(first, again)
    assert fal.state.count("submit") == 2 and fal.state.count("upload") == 2
    assert "2 of 2 from cache (no charge)" in statuses[-1]
    # The upload memory too: a new request on the same pixels uploads nothing.
    become_another_worker(monkeypatch, tmp_path, "c")
    run_node("FalColorCorrection", image=image, seed=6)
    assert fal.state.count("submit") == 4 and fal.state.count("upload") == 2
    assert not (tmp_path / "b" / "cache").exists() and not (tmp_path / "c" / "cache").exists()


def test_namespaces_keep_deployments_apart(fal, shared_state, monkeypatch, tmp_path):
    image = sample_image(32, 32, seed=102)
    run_node("FalSharpen", image=image)
    become_another_worker(monkeypatch, tmp_path, "other-deployment")
    monkeypatch.setenv(state.ENV_REDIS_PREFIX, shared_state + "elsewhere:")
    run_node("FalSharpen", image=image)
    assert fal.state.count("submit") == 2


def test_the_daily_ceiling_and_the_owners_settings_are_every_workers(fal, shared_state,
                                                                     monkeypatch, tmp_path):
    priced(fal)
    server_settings.update({"max_usd_per_day": 0.12})          # saved in Redis
    run_node("FalColorCorrection", image=sample_image(8, 8, batch=2, seed=103))   # $0.10
    become_another_worker(monkeypatch, tmp_path, "b")
    assert server_settings.load()["max_usd_per_day"] == 0.12
    assert server_settings.spent_today() == pytest.approx(0.10)
    with pytest.raises(FalNodeError, match=r"spent or under way in today would pass the \$0.12"):
        run_node("FalColorCorrection", image=sample_image(8, 8, seed=104))
    assert fal.state.count("submit") == 2
    assert not (tmp_path / "b" / "keys").exists()      # nothing of it in local files


def test_the_fleets_ledger_has_every_workers_requests(fal, shared_state, monkeypatch,
                                                      tmp_path):
    priced(fal)
    run_node("FalColorCorrection", image=sample_image(8, 8, batch=2, seed=105))
    become_another_worker(monkeypatch, tmp_path, "b")
    run_node("FalColorCorrection", image=sample_image(8, 8, seed=106))
    rows = state.store().requests_today()
    made = {e["request_id"] for e in fal.state.entries("submit")}
    assert {r["request_id"] for r in rows} == made and len(rows) == 3
    assert len({r["worker"] for r in rows}) == 1            # one process played both
    assert all(r["estimated_usd"] == pytest.approx(0.05) and r["billed_usd"] is not None
               for r in rows)
    assert pricing.ledger.entries()[-1].request_id in made  # B's session ledger: its own


def test_workers_racing_at_the_ceiling_stop_at_it(redis_server, shared_state):
    """Six workers (each its own connection) reserve $0.04 at a time against a $1 ceiling,
    flat out: the script reads and holds in one step, so together they stop at $1."""
    from comfyui_fal_edit.nodes.state.redis_store import RedisStore
    url, prefix = redis_server.url, shared_state
    charged: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker() -> None:
        store = RedisStore(url, prefix)
        start.wait()
        while True:
            try:
                token = store.reserve(0.04, 1.0, time.time() + 60)
            except state.CeilingReached:
                break
            store.charge(token, 0.04)            # sent: the hold becomes spend
            store.release(token)
            with lock:
                charged.append(0.04)
        store.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    store = RedisStore(url, prefix)
    assert len(charged) == 25
    assert store.spent_today() == pytest.approx(1.0) and store.held() == 0
    store.close()


# -- single flight across workers ------------------------------------------------------

WORKER_RUN = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
from conftest import run_node, sample_image
from comfyui_fal_edit.nodes import runtime
runtime.LEASE_S = 1.5
run_node("FalColorCorrection", image=sample_image(64, 48, seed=110), seed=7)
print("worker A done")
"""


def start_worker_a(tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, COMFYUI_FAL_CACHE_DIR=str(tmp_path / "a" / "cache"),
               COMFYUI_FAL_KEYS_FILE=str(tmp_path / "a" / "keys" / "keys.json"))
    script = WORKER_RUN.format(root=str(TESTS.parent), tests=str(TESTS))
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)


def wait_for_submit(fal, worker: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while fal.state.count("status_stream") == 0 and time.monotonic() < deadline:
        assert worker.poll() is None, "worker A ended on its own"
        time.sleep(0.02)
    assert fal.state.count("submit") == 1


def test_a_worker_waits_for_another_workers_identical_request(fal, shared_state, monkeypatch,
                                                              tmp_path, statuses):
    fal.state.latency_s = 2.0
    worker_a = start_worker_a(tmp_path)
    try:
        wait_for_submit(fal, worker_a)
        become_another_worker(monkeypatch, tmp_path, "b")
        images, _, _ = run_node("FalColorCorrection", image=sample_image(64, 48, seed=110),
                                seed=7)
        assert worker_a.wait(60) == 0
    finally:
        worker_a.kill()
        worker_a.wait()
    assert images.shape == (1, 48, 64, 3)
    assert fal.state.count("submit") == 1 and fal.state.count("upload") == 1
    assert any("waiting for another worker" in s for s in statuses)


def test_a_killed_workers_job_is_picked_up_by_another(fal, shared_state, monkeypatch,
                                                      tmp_path, capture_logs):
    """Worker A killed (SIGKILL) after its submit: its lease expires, worker B takes it over
    and resumes the fal job by the request id in the shared journal."""
    fal.state.latency_s = 3.0
    worker_a = start_worker_a(tmp_path)
    try:
        wait_for_submit(fal, worker_a)
    finally:
        worker_a.kill()
        worker_a.wait()
    become_another_worker(monkeypatch, tmp_path, "b")
    monkeypatch.setattr("comfyui_fal_edit.nodes.runtime.LEASE_S", 1.5)
    images, _, _ = run_node("FalColorCorrection", image=sample_image(64, 48, seed=110), seed=7)
    assert images.shape == (1, 48, 64, 3)
    assert fal.state.count("submit") == 1, "the job was paid for twice"
    assert fal.state.count("cancel") == 0
    assert any("picking up request" in line for line in capture_logs)
    # The shared day holds at least fal's bill: A entered its estimate, B adds the bill.
    [entry] = pricing.ledger.entries()
    assert entry.billed_usd is not None and entry.billed_usd > 0
    assert state.store().spent_today() >= entry.billed_usd


# -- faults ------------------------------------------------------------------------------

def test_an_unreachable_redis_is_one_sentence_and_nothing_is_sent(fal, monkeypatch):
    from redis_server import available, free_port
    if available():
        pytest.skip(available())
    port = free_port()
    monkeypatch.setenv(state.ENV_REDIS_URL, f"redis://:hunter2-secret@127.0.0.1:{port}/0")
    state.reset()
    with pytest.raises(FalNodeError) as err:
        run_node("FalColorCorrection", image=sample_image(16, 16, seed=111))
    message = str(err.value)
    assert f"Redis at redis://127.0.0.1:{port}/0 could not be reached" in message
    assert "check that redis-server is running" in message
    assert "hunter2" not in message and "\n" not in message
    assert fal.state.log == []


def test_local_files_stand_in_only_when_the_owner_opts_in(fal, monkeypatch, caplog):
    from redis_server import available, free_port
    if available():
        pytest.skip(available())
    monkeypatch.setenv(state.ENV_REDIS_URL, f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv(state.ENV_REDIS_FALLBACK, "local")
    state.reset()
    images, _, _ = run_node("FalColorCorrection", image=sample_image(16, 16, seed=112))
    assert images.shape[0] == 1 and fal.state.count("submit") == 1
    said = [r.getMessage() for r in caplog.records if "own local files" in r.getMessage()]
    assert len(said) == 1 and "not counted against the shared ceiling" in said[0]


def test_a_password_protected_redis(fal, monkeypatch):
    from redis_server import RedisServer, available
    if available():
        pytest.skip(available())
    password = "pw-7c1f0e-very-secret"
    with RedisServer(password=password) as server:
        host = f"127.0.0.1:{server.port}"
        monkeypatch.setenv(state.ENV_REDIS_URL, server.url)
        state.reset()
        images, _, _ = run_node("FalSharpen", image=sample_image(16, 16, seed=113))
        assert images.shape[0] == 1
        assert any(k.startswith(b"comfyui-fal:result:") for k in server.client().keys())
        for url, said in ((f"redis://{host}/0", "asks for a password"),
                          (f"redis://:wrong-{password}@{host}/0", "refused the password")):
            monkeypatch.setenv(state.ENV_REDIS_URL, url)
            state.reset()
            with pytest.raises(FalNodeError) as err:
                run_node("FalSharpen", image=sample_image(16, 16, seed=114))
            assert said in str(err.value) and f"redis://{host}/0" in str(err.value)
            assert password not in str(err.value)
    state.reset()
    assert fal.state.count("submit") == 1


def test_rediss_with_a_password_over_tls(fal, monkeypatch):
    """rediss:// (TLS, the server's CA named in the URL as redis-py reads it) with a
    password: the run works, and a client that does not trust the CA is one sentence."""
    import shutil

    from redis_server import RedisServer, available
    if available() or not shutil.which("openssl"):
        pytest.skip(available() or "no openssl to make the test certificates")
    with RedisServer(password="tls-pw-31e7", tls=True) as server:
        monkeypatch.setenv(state.ENV_REDIS_URL, server.url + "&prefix=tls-test:")
        state.reset()
        images, _, _ = run_node("FalSharpen", image=sample_image(16, 16, seed=120))
        assert images.shape[0] == 1
        store = state.store()
        assert store.kind == "redis" and store.prefix == "tls-test:"
        assert any(k.startswith(b"tls-test:result:") for k in server.client().keys())
        untrusted = f"rediss://:tls-pw-31e7@127.0.0.1:{server.port}/0"
        monkeypatch.setenv(state.ENV_REDIS_URL, untrusted)
        state.reset()
        with pytest.raises(FalNodeError) as err:
            run_node("FalSharpen", image=sample_image(16, 16, seed=121))
        assert f"Redis at rediss://127.0.0.1:{server.port}/0 could not be reached" in str(err.value)
        assert "tls-pw" not in str(err.value)
    state.reset()


def test_a_redis_that_keeps_nothing_on_disk_is_warned_about_once(fal, shared_state, caplog):
    run_node("FalSharpen", image=sample_image(16, 16, seed=115))
    run_node("FalSharpen", image=sample_image(16, 16, seed=116))
    said = [r.getMessage() for r in caplog.records if "keeps nothing on disk" in r.getMessage()]
    assert len(said) == 1 and "appendonly" in said[0]


def test_redis_lost_mid_run_fails_in_one_sentence_and_keeps_what_was_sent(fal, monkeypatch,
                                                                          tmp_path):
    """Redis stopped while a request runs: the node fails with one sentence; the request,
    counted when it was sent, is still in today's spend once Redis is back (appendonly)."""
    from redis_server import RedisServer, available
    if available():
        pytest.skip(available())
    priced(fal)
    fal.state.latency_s = 1.5
    with RedisServer(persistent=True, directory=tmp_path / "redis") as server:
        monkeypatch.setenv(state.ENV_REDIS_URL, server.url)
        state.reset()

        def stop_redis_after_the_submit():
            deadline = time.monotonic() + 30
            while fal.state.count("submit") == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            server.stop()

        stopper = threading.Thread(target=stop_redis_after_the_submit)
        stopper.start()
        with pytest.raises(FalNodeError) as err:
            run_node("FalColorCorrection", image=sample_image(16, 16, seed=117))
        stopper.join()
        assert f"Redis at redis://127.0.0.1:{server.port}/0" in str(err.value)
        assert "\n" not in str(err.value).strip()
        server.start()                                   # same folder, same port
        assert fal.state.count("submit") == 1
        assert server_settings.spent_today() == pytest.approx(0.05)
        # The request's row, completed while Redis was away, is written once it is back.
        made = fal.state.entries("submit")[0]["request_id"]
        assert [r["request_id"] for r in state.store().requests_today()] == [made]
    state.reset()


# -- what never goes there ----------------------------------------------------------------

def test_no_key_material_reaches_redis(fal, shared_state, redis_server, monkeypatch, tmp_path):
    from comfyui_fal_edit.nodes import keystore
    named = "named-key-0f3e9a1c-FAKE-77d2"
    keystore.add("studio", named)
    run_node("FalColorCorrection", image=sample_image(32, 32, batch=2, seed=118))
    settings = pack_settings(key_name="studio")
    run_node("FalColorCorrection", image=sample_image(32, 32, seed=119), settings=settings)
    run_node("FalColorCorrection", image=sample_image(32, 32, seed=119), settings=settings)
    server_settings.update({"max_usd_per_day": 3.0})
    stored = all_redis_bytes(redis_server)
    assert any(shared_state.encode() in b for b in stored)       # this test wrote there
    for secret in (TEST_KEY, named):
        for piece in {secret, secret[:12], secret[-12:]}:
            assert not any(piece.encode() in b for b in stored), piece


def pack_settings(key_name: str) -> FalSettings:
    from comfyui_fal_edit.nodes.settings import FalKeyRef
    return FalSettings(key=FalKeyRef(key_name))


def test_the_result_cache_on_redis_keeps_the_owners_budget(redis_server, shared_state):
    from comfyui_fal_edit.nodes.state.redis_store import RedisStore
    store = RedisStore(redis_server.url, shared_state)
    store.max_bytes_override = 2500
    blob = b"\x89PNG\r\n\x1a\n" + b"x" * 992
    for name in ("one", "two", "three"):
        store.put_result(name, "e", {"urls": [], "flagged": [False]}, [blob], ["png"])
        time.sleep(0.01)
    assert store.get_result("one") is None                  # least recently used: out
    assert store.get_result("two")[1] == [blob]
    store.put_result("four", "e", {"urls": [], "flagged": [False]}, [blob], ["png"])
    assert store.get_result("three") is None and store.get_result("two") is not None
    client = redis_server.client()
    assert int(client.get(shared_state + "results:bytes")) == 2000
    store.close()


def test_a_url_that_is_not_redis_is_one_sentence_without_its_password(fal, monkeypatch):
    monkeypatch.setenv(state.ENV_REDIS_URL, "http://:pw-9d8a@127.0.0.1:6379/0")
    state.reset()
    with pytest.raises(FalNodeError) as err:
        run_node("FalSharpen", image=sample_image(16, 16, seed=122))
    assert "COMFYUI_FAL_REDIS_URL (http://127.0.0.1:6379/0) is not a Redis URL" in str(err.value)
    assert "pw-9d8a" not in str(err.value) and fal.state.log == []
    state.reset()


def test_a_damaged_spend_on_redis_counts_as_the_daily_ceiling_reached(fal, shared_state,
                                                                      redis_server):
    from comfyui_fal_edit.nodes.state.base import today
    priced(fal)
    key = f"{shared_state}spend:{today()}"
    redis_server.client().set(key, "not a number")
    with pytest.raises(FalNodeError) as err:
        run_node("FalColorCorrection", image=sample_image(8, 8, seed=123))
    assert key in str(err.value) and "the daily ceiling counts as reached" in str(err.value)
    assert fal.state.count("upload") == 0 and fal.state.count("submit") == 0
    assert redis_server.client().get(key) == b"not a number"       # left as it was


@pytest.mark.asyncio
async def test_the_settings_panel_says_in_one_sentence_that_redis_is_away(monkeypatch, tmp_path):
    from aiohttp.test_utils import TestClient, TestServer
    from redis_server import free_port

    from comfyui_fal_edit.nodes import routes
    port = free_port()
    monkeypatch.setenv("COMFYUI_FAL_KEYS_FILE", str(tmp_path / "keys" / "keys.json"))
    monkeypatch.setenv(state.ENV_REDIS_URL, f"redis://:pw-55aa@127.0.0.1:{port}/0")
    state.reset()
    try:
        async with TestClient(TestServer(routes.make_app())) as client:
            response = await client.get("/fal/server-settings")
            said = (await response.json())["error"]
    finally:
        state.reset()
    assert response.status == 503
    assert f"Redis at redis://127.0.0.1:{port}/0 could not be reached" in said
    assert "pw-55aa" not in said


def test_a_full_redis_is_one_sentence_naming_maxmemory(fal, shared_state, redis_server):
    client = redis_server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)          # every write is refused: Redis is full
    try:
        with pytest.raises(FalNodeError) as err:
            run_node("FalSharpen", image=sample_image(64, 64, seed=124))
    finally:
        client.config_set("maxmemory", 0)
    assert "is full (its maxmemory is reached)" in str(err.value)
    assert "cache_max_gb" in str(err.value)


def test_a_dead_workers_hold_expires_and_frees_the_ceiling(redis_server, shared_state):
    """A worker killed after passing the guard never lets its hold go: the hold ends at its
    expiry (its sent requests stay counted, as spend), so the ceiling's headroom returns."""
    from comfyui_fal_edit.nodes.state.redis_store import RedisStore
    dead, alive = RedisStore(redis_server.url, shared_state), RedisStore(redis_server.url,
                                                                          shared_state)
    token = dead.reserve(0.80, 1.0, time.time() + 0.5)
    dead.charge(token, 0.30)                       # one request sent before it died
    with pytest.raises(state.CeilingReached):
        alive.reserve(0.25, 1.0, time.time() + 60)
    time.sleep(0.6)
    alive.release(alive.reserve(0.25, 1.0, time.time() + 60))
    assert alive.spent_today() == pytest.approx(0.30) and alive.held() == 0
    dead.close()
    alive.close()
