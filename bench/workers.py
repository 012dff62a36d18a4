"""Three ComfyUI workers sharing one Redis and one fal stand-in: the figures of issue 24.

Each worker is a separate Python process running the pack's nodes (the same code a
ComfyUI server runs), with its own cache folder and key file; only Redis is shared. The
emulator runs in this process (so its job counts can be read); Redis is a real
redis-server (tests/redis_server.py) with appendonly on, on a free loopback port.

    .venv/bin/python bench/workers.py [--quick]

Figures printed:
  1. a result bought on A, asked for on B and C: submits and uploads on B and C
  2. the same request sent to all three at once: submits
  3. a $1 daily ceiling, three workers running $0.04 requests flat out: total spent
  4. A SIGKILLed 1 s into a 6 s job, the same request then sent to B: submits, B's answer
  5. Redis stopped mid-run (SIGTERM, then started again on the same folder): what the
     workers said, and today's spend against the jobs the emulator made
  6. per-item overhead, Redis against local files (median), and a cache hit of a 1 MP
     result from Redis against one from disk
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

PRICE = 0.04                      # SeedEdit 3.0 on the emulator's price list
BENCH_KEY = "bench-key-00000000-FAKE"


# -- the worker process ---------------------------------------------------------------

def worker_main() -> None:
    """Read one JSON command a line from stdin, answer one JSON line on stdout."""
    import asyncio

    import numpy as np
    import torch

    from tools.pack_loader import load_pack
    pack = load_pack()
    from comfyui_fal_edit.nodes import caches, pricing, server_settings
    from comfyui_fal_edit.nodes.errors import FalNodeError

    def image(width: int, height: int, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        return torch.from_numpy(rng.random((1, height, width, 3)).astype(np.float32))

    def run(node: str, width: int, height: int, seed: int, forget: bool = False) -> dict:
        if forget:
            caches.caches.forget_memory()
        instance = pack.NODE_CLASS_MAPPINGS[node]()
        inputs = {"image": image(width, height, seed)}
        if node == "FalSeedEditV3":
            inputs["prompt"] = "make it brighter"
        t0 = time.perf_counter()
        try:
            result = getattr(instance, instance.FUNCTION)(**inputs)
            if asyncio.iscoroutine(result):
                result = asyncio.run(result)
        except FalNodeError as exc:
            return {"ok": False, "error": str(exc), "ms": (time.perf_counter() - t0) * 1000}
        if isinstance(result, dict):
            result = result["result"]
        return {"ok": True, "ms": (time.perf_counter() - t0) * 1000,
                "shape": list(result[0].shape)}

    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "run":
            answer = run(**command)
        elif op == "until_refused":            # distinct requests, flat out
            done, last = 0, {}
            while True:
                last = run(command["node"], 32, 32, command["first_seed"] + done)
                if not last["ok"]:
                    break
                done += 1
            answer = {"ok": True, "requests": done, "error": last.get("error", "")}
        elif op == "prices":
            ok = asyncio.run(pricing.prices.refresh("price-key-for-bench", command["base"]))
            answer = {"ok": ok}
        elif op == "settings":
            answer = {"ok": True, "settings": server_settings.update(command["changes"])}
        elif op == "spent":
            answer = {"ok": True, "spent": server_settings.spent_today()}
        elif op == "ledger":
            from comfyui_fal_edit.nodes import state
            answer = {"ok": True, "rows": state.store().requests_today()}
        else:
            break
        print(json.dumps(answer), flush=True)


# -- the orchestration --------------------------------------------------------------

class Worker:
    def __init__(self, name: str, folder: Path, env: dict[str, str]) -> None:
        self.name = name
        env = dict(os.environ, **env,
                   COMFYUI_FAL_CACHE_DIR=str(folder / name / "cache"),
                   COMFYUI_FAL_KEYS_FILE=str(folder / name / "keys" / "keys.json"))
        self.process = subprocess.Popen([sys.executable, __file__, "--worker"], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, bufsize=1)
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line.rstrip())

    def send(self, **command) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} ended: " + "\n".join(self.stderr[-5:]))
        return json.loads(line)

    def ask(self, **command) -> dict:
        self.send(**command)
        return self.answer()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send(op="exit")
                self.process.wait(10)
            except Exception:
                self.kill()


def all_at_once(workers: list[Worker], **command) -> list[dict]:
    for worker in workers:
        worker.send(**command)
    return [worker.answer() for worker in workers]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer overhead samples")
    args = parser.parse_args()
    if args.worker:
        worker_main()
        return

    from fal_emulator import FalEmulator
    from redis_server import RedisServer, available

    reason = available()
    if reason:
        sys.exit(f"bench/workers.py needs a Redis server: {reason}")
    samples = 12 if args.quick else 40
    folder = Path(tempfile.mkdtemp(prefix="fal-workers-"))
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    with FalEmulator() as emulator, RedisServer(persistent=True,
                                                directory=folder / "redis") as redis:
        shared = {"COMFYUI_FAL_REDIS_URL": redis.url, "COMFYUI_FAL_REDIS_PREFIX": prefix,
                  "COMFYUI_FAL_BASE_URL": emulator.base_url, "FAL_KEY": BENCH_KEY}
        workers = [Worker(n, folder, shared) for n in "ABC"]
        emulator.state.latency_s = 0.0
        try:
            figures(emulator, redis, workers, folder, shared, samples)
        finally:
            for worker in workers:
                worker.close()


def figures(emulator, redis, workers, folder, shared, samples) -> None:
    a, b, c = workers
    for worker in workers:
        assert worker.ask(op="prices", base=emulator.base_url)["ok"]
    state = emulator.state
    print(f"3 workers (separate Python processes), Redis {redis.url} (appendonly), "
          f"emulator {emulator.base_url}")

    # 1. bought on A, asked on B and C
    assert a.ask(op="run", node="FalColorCorrection", width=64, height=48, seed=1)["ok"]
    before = state.count("submit"), state.count("upload")
    answers = [w.ask(op="run", node="FalColorCorrection", width=64, height=48, seed=1)
               for w in (b, c)]
    assert all(x["ok"] for x in answers)
    print(f"1. bought on A, asked on B and C: {state.count('submit') - before[0]} submits, "
          f"{state.count('upload') - before[1]} uploads on B and C")

    # 2. the same request to all three at once
    state.latency_s = 1.0
    before = state.count("submit")
    answers = all_at_once(workers, op="run", node="FalColorCorrection", width=64, height=48,
                          seed=2)
    state.latency_s = 0.0
    print(f"2. the same request sent to A, B and C at once: {state.count('submit') - before} "
          f"submit ({sum(x['ok'] for x in answers)} of 3 answered)")

    # 3. $1 daily ceiling, $0.04 requests flat out
    spent0 = a.ask(op="spent")["spent"]
    a.ask(op="settings", changes={"max_usd_per_day": round(spent0 + 1.0, 6)})
    before = state.count("submit", "fal-ai/bytedance/seededit/v3/edit-image")
    for n, worker in enumerate(workers):
        worker.send(op="until_refused", node="FalSeedEditV3", first_seed=1000 * (n + 1))
    answers = [worker.answer() for worker in workers]
    jobs = state.count("submit", "fal-ai/bytedance/seededit/v3/edit-image") - before
    spent = a.ask(op="spent")["spent"] - spent0
    print(f"3. $1.00 daily ceiling, 3 workers running ${PRICE:.2f} requests flat out: "
          f"{jobs} jobs made (${jobs * PRICE:.2f} at fal's price), ${spent:.2f} counted "
          f"(goal ≤ $1.04); requests per worker {[x['requests'] for x in answers]}; "
          f"each stopped with: \"{answers[0]['error'][:90]}…\"")
    a.ask(op="settings", changes={"max_usd_per_day": 1000.0})

    # 4. A SIGKILLed 1 s into a 6 s job, then B asked
    state.latency_s = 6.0
    before = state.count("submit")
    a.send(op="run", node="FalColorCorrection", width=64, height=48, seed=4)
    deadline = time.monotonic() + 30
    while state.count("submit") == before and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)
    a.kill()
    t0 = time.monotonic()
    answer = b.ask(op="run", node="FalColorCorrection", width=64, height=48, seed=4)
    waited = time.monotonic() - t0
    state.latency_s = 0.0
    print(f"4. A killed 1 s into a 6 s job, then B asked: {state.count('submit') - before} "
          f"submit in all; B {'returned the result ' + str(answer['shape']) if answer['ok'] else 'failed: ' + answer['error']} "
          f"after {waited:.1f} s (A's lease ran out, B resumed its request from the journal)")
    a = workers[0] = Worker("A2", folder, shared)
    a.ask(op="prices", base=emulator.base_url)

    # 5. Redis stopped mid-run
    state.latency_s = 0.5
    spent0 = a.ask(op="spent")["spent"]
    before = state.count("submit", "fal-ai/bytedance/seededit/v3/edit-image")
    for n, worker in enumerate(workers):
        worker.send(op="until_refused", node="FalSeedEditV3", first_seed=50000 + 1000 * n)
    time.sleep(2.5)
    redis.stop()
    said = [worker.answer() for worker in workers]
    state.latency_s = 0.0
    jobs = state.count("submit", "fal-ai/bytedance/seededit/v3/edit-image") - before
    redis.start()
    for worker in workers[1:]:    # each worker talks to Redis again (adds what it kept)
        worker.ask(op="spent")
    spent = a.ask(op="spent")["spent"] - spent0
    made = {e["request_id"] for e in state.entries("submit")}
    rows = [r for r in a.ask(op="ledger")["rows"] if r["request_id"] in made]
    print(f"5. Redis stopped mid-run: each worker stopped with one sentence, e.g. "
          f"\"{said[0]['error']}\"")
    print(f"   after Redis came back (same folder, appendonly): ${spent:.2f} counted for "
          f"{jobs} jobs the emulator made (${jobs * PRICE:.2f}); lost from the ledger: "
          f"${max(0.0, jobs * PRICE - spent):.2f}; the fleet's ledger in Redis has a row with "
          f"its request id for {len(rows)} of the {len(made)} jobs made so far")

    # 6. overhead: Redis against local files; cache hits of a 1 MP result
    local_env = {k: v for k, v in shared.items() if not k.startswith("COMFYUI_FAL_REDIS")}
    local = Worker("L", folder, local_env)
    local.ask(op="prices", base=emulator.base_url)
    on_redis, on_disk = [], []
    for n in range(samples):   # alternate, so both see the same machine load
        on_redis.append(b.ask(op="run", node="FalSharpen", width=64, height=64,
                              seed=90000 + n)["ms"])
        on_disk.append(local.ask(op="run", node="FalSharpen", width=64, height=64,
                                 seed=95000 + n)["ms"])
    redis_ms, disk_ms = statistics.median(on_redis), statistics.median(on_disk)
    print(f"6. one-item run, median of {samples}: Redis {redis_ms:.1f} ms, local files "
          f"{disk_ms:.1f} ms: overhead {redis_ms - disk_ms:+.1f} ms per item (goal ≤ 5 ms)")
    for worker in (b, local):
        assert worker.ask(op="run", node="FalSharpen", width=1024, height=1024, seed=7)["ok"]
    hits_redis, hits_disk = [], []
    for _ in range(max(5, samples // 3)):
        hits_redis.append(b.ask(op="run", node="FalSharpen", width=1024, height=1024, seed=7,
                                forget=True)["ms"])
        hits_disk.append(local.ask(op="run", node="FalSharpen", width=1024, height=1024,
                                   seed=7, forget=True)["ms"])
    print(f"   cache hit of a 1 MP result (memory dropped first), median: Redis "
          f"{statistics.median(hits_redis):.1f} ms, disk {statistics.median(hits_disk):.1f} ms")
    local.close()
    store_calls(redis, shared["COMFYUI_FAL_REDIS_PREFIX"], folder, samples * 5)


def store_calls(redis, prefix: str, folder: Path, runs: int) -> None:
    """The state-store calls one fresh item makes, timed alone in this process: what the
    backend itself adds to an item, without the machine's noise around a whole run."""
    from tools.pack_loader import load_pack
    load_pack()
    from comfyui_fal_edit.nodes.state.local import LocalStore
    from comfyui_fal_edit.nodes.state.redis_store import RedisStore

    os.environ["COMFYUI_FAL_KEYS_FILE"] = str(folder / "calls" / "keys" / "keys.json")
    blob = os.urandom(200_000)              # about a 0.3 MP PNG result
    figures = {}
    for name, store in (("Redis", RedisStore(redis.url, prefix + "calls:")),
                        ("local files", LocalStore(folder / "calls" / "cache"))):
        times = []
        for n in range(runs):
            key, t0 = f"item-{n}", time.perf_counter()
            store.get_result(key)
            store.acquire_lease(key, "bench", 10.0)
            token = store.reserve(0.04, 0.0, time.time() + 60)
            store.get_upload("server", key)
            store.put_upload("server", key, "https://v3.fal.media/files/x.png", 86400)
            store.charge(token, 0.04)
            store.note_request(key, {"request_id": key})
            store.put_journal(key, "fal-ai/x", "request-" + key)
            store.put_result(key, "fal-ai/x", {"urls": [], "flagged": [False]}, [blob], ["png"])
            store.drop_journal(key)
            store.note_request(key, {"request_id": key, "billed_usd": 0.04})
            store.release_lease(key, "bench")
            store.release(token)
            times.append((time.perf_counter() - t0) * 1000)
        figures[name] = statistics.median(times)
        store.close()
    print(f"   the state-store calls of one item (13, a 200 KB result), median of {runs}: "
          f"Redis {figures['Redis']:.2f} ms, local files {figures['local files']:.2f} ms")


if __name__ == "__main__":
    main()
