"""Shared fixtures: the pack loaded as a package, and the local fal emulator.

The repository root is itself the ComfyUI package (relative imports inside), so
tests load it under a fixed name, the way ComfyUI loads it from custom_nodes/.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "test-key-5d1e8c0a-FAKE-2b9f-key"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for fal_emulator and tools

from tools.pack_loader import load_pack  # noqa: E402


pack = load_pack()

from comfyui_fal_edit.nodes import caches as caches_mod  # noqa: E402
from comfyui_fal_edit.nodes import pricing  # noqa: E402
from comfyui_fal_edit.nodes.host import host  # noqa: E402
from fal_emulator import FalEmulator  # noqa: E402


@pytest.fixture(scope="session")
def emulator_server():
    with FalEmulator() as server:
        yield server


@pytest.fixture
def fal(emulator_server, monkeypatch, tmp_path, request):
    """A clean emulator, clean caches, a key in FAL_KEY and the pack pointed at the emulator.
    With COMFYUI_FAL_TEST_STATE=redis in the environment, every test runs on a Redis state
    (a namespace of its own) instead of local files: the suite, run that way, exercises the
    Redis backend (tests that look at the local files themselves then fail, as they should)."""
    emulator_server.reset()
    if os.environ.get("COMFYUI_FAL_TEST_STATE") == "redis":
        import uuid
        server = request.getfixturevalue("redis_server")
        monkeypatch.setenv("COMFYUI_FAL_REDIS_URL", server.url)
        monkeypatch.setenv("COMFYUI_FAL_REDIS_PREFIX", f"suite-{uuid.uuid4().hex[:10]}:")
    caches_mod.caches.clear()
    pricing.prices.clear()
    pricing.price_refresh.reset()
    pricing.ledger.clear()
    pricing.learned.clear()
    monkeypatch.setenv("COMFYUI_FAL_CACHE_DIR", str(tmp_path / "cache"))
    host.interrupt_requested = False
    host.status_listener = None
    monkeypatch.setenv("COMFYUI_FAL_BASE_URL", emulator_server.base_url)
    monkeypatch.setenv("FAL_KEY", TEST_KEY)
    monkeypatch.setenv("COMFYUI_FAL_KEYS_FILE", str(tmp_path / "keys" / "keys.json"))
    yield emulator_server
    caches_mod.caches.clear()
    host.interrupt_requested = False
    host.status_listener = None


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server for the session (no persistence); skips, saying why, where
    none can be started."""
    from redis_server import RedisServer, available
    reason = available()
    if reason:
        pytest.skip(reason)
    with RedisServer() as server:
        yield server


@pytest.fixture
def shared_state(fal, redis_server, monkeypatch):
    """The pack's state on the session's Redis, in a namespace of this test's own."""
    import uuid

    from comfyui_fal_edit.nodes import state
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    monkeypatch.setenv(state.ENV_REDIS_URL, redis_server.url)
    monkeypatch.setenv(state.ENV_REDIS_PREFIX, prefix)
    state.reset()
    yield prefix
    state.reset()


@pytest.fixture
def emulator(emulator_server, monkeypatch):
    """A clean emulator with the pack pointed at it (for tests that bring their own key)."""
    emulator_server.reset()
    monkeypatch.setenv("COMFYUI_FAL_BASE_URL", emulator_server.base_url)
    yield emulator_server
    emulator_server.reset()


@pytest.fixture
def statuses():
    """Every status text the runtime shows, in order."""
    seen: list[str] = []
    host.status_listener = lambda node_id, text: seen.append(text)
    yield seen
    host.status_listener = None


def node(name: str):
    return pack.NODE_CLASS_MAPPINGS[name]()


def run_node(name: str, **inputs):
    """Run a node the way ComfyUI does: call FUNCTION, awaiting it on a fresh loop."""
    instance = node(name)
    result = getattr(instance, instance.FUNCTION)(**inputs)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    if isinstance(result, dict) and "result" in result:   # {"ui": ..., "result": ...}
        result = result["result"]
    return result


def interrupt_after_submits(emulator, count: int) -> None:
    """Press ComfyUI's Cancel (the interrupt flag) once `count` requests reached fal."""
    import threading
    import time

    def interrupt():
        deadline = time.monotonic() + 20
        while emulator.state.count("submit") < count and time.monotonic() < deadline:
            time.sleep(0.02)
        host.interrupt_requested = True

    threading.Thread(target=interrupt, daemon=True).start()


def sample_image(width: int = 96, height: int = 64, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A distinct, non-flat test image batch in ComfyUI's IMAGE layout."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for b in range(batch):
        base = np.stack([(x / width), (y / height), np.full_like(x, (b + 1) / (batch + 1), float)], -1)
        noise = rng.random((height, width, 3)) * 0.2
        frames.append(np.clip(base * 0.8 + noise, 0, 1))
    return torch.from_numpy(np.stack(frames).astype(np.float32))


@pytest.fixture
def capture_logs():
    """Every log record of every logger at DEBUG, as text."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            try:
                records.append(self.format(record))
            except Exception:
                records.append(str(record.msg))

    handler = Collect(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield records
    root.removeHandler(handler)
    root.setLevel(old_level)
