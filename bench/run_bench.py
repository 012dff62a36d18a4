#!/usr/bin/env python
"""Performance benchmark of the fal node pack against the local fal emulator (issue #7).

Not part of the test suite. Run it with `make bench` (or `.venv/bin/python
bench/run_bench.py`). It starts the emulator in its own process (so that its
image work, which real fal does on its own servers, does not compete with the
node for this process's GIL), controls it over HTTP with injected latency,
measures what the node adds on top of raw fal-client calls,
batch concurrency, upload reuse, interrupt latency, import time, encode/decode
cost and peak memory, prints a table, and prints as its LAST line one JSON
object with the headline figures.

    --n N        repetitions behind each timing median (default 5)
    --quick      fewer repetitions, smaller memory test (a smoke run, ~1 min)
    --only A,B   run only some sections: overhead, batch, stream, list, reuse,
                 interrupt, import, codec, memory
    --emulator thread   run the emulator on a thread of this process instead
                 (the old setup; for comparison only: it inflates the ratios)

Absolute times are noisy on a small machine; the ratios are what matter.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_KEY = "bench-key-0000-FAKE-0000-key"
ENDPOINT_NODE = "FalColorCorrection"      # fal-ai/image-editing/color-correction, JPEG results
CHAIN_NODE = "FalSharpen"
LATENCY_S = 1.0                           # fal's processing time per request in the timings

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.pack_loader import PACK_NAME, load_pack  # noqa: E402


def outputs(returned):
    """A node's output tuple, whether it returns the tuple or ComfyUI's
    {"ui": ..., "result": tuple} form."""
    return returned["result"] if isinstance(returned, dict) else returned


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def med(values):
    return statistics.median(values) if values else float("nan")


# -- inputs -------------------------------------------------------------------

def photo_like(width: int, height: int, batch: int = 1, seed: int = 0):
    """A [B,H,W,3] float32 IMAGE that compresses roughly like a photo (smooth
    gradients, soft shapes, a little sensor noise), filled in place so that
    making it leaves no large temporaries behind."""
    import numpy as np
    import torch

    out = torch.empty((batch, height, width, 3), dtype=torch.float32)
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    for b in range(batch):
        f = out[b].numpy()
        phase = (b + 1) / (batch + 1)
        f[..., 0] = 0.5 + 0.35 * np.sin(6.0 * x + 3.0 * phase) * np.cos(4.0 * y)
        f[..., 1] = 0.3 + 0.4 * y + 0.1 * np.sin(20.0 * x * y + phase)
        f[..., 2] = 0.6 - 0.3 * x + 0.2 * phase
        f += rng.standard_normal((height, width, 1), dtype=np.float32) * 0.01
        np.clip(f, 0.0, 1.0, out=f)
    return out


# -- emulator ---------------------------------------------------------------------

class ThreadEmulator:
    """The in-thread FalEmulator behind EmulatorProcess's interface
    (--emulator thread; shares this process's GIL, so only for comparison)."""

    where = "thread of the bench process (shares its GIL)"

    def start(self) -> "ThreadEmulator":
        from fal_emulator import FalEmulator

        self.emu = FalEmulator().start()
        self.state, self.base_url, self.pid = self.emu.state, self.emu.base_url, os.getpid()
        return self

    def stop(self) -> None:
        self.emu.stop()

    def configure(self, **knobs) -> None:
        self.state.configure(**knobs)

    def reset(self) -> None:
        self.state.reset()

    def log(self, since: int = 0) -> list:
        with self.state._lock:
            return list(self.state.log[since:])

    def log_length(self) -> int:
        with self.state._lock:
            return len(self.state.log)

    def cpu_seconds(self) -> float | None:
        return None                           # not separable from the node's


def make_emulator(kind: str):
    if kind == "thread":
        return ThreadEmulator().start()
    from fal_emulator.process import EmulatorProcess

    emu = EmulatorProcess().start()
    emu.where = f"own process (pid {emu.pid}), controlled over HTTP"
    return emu


# -- harness ------------------------------------------------------------------

class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.n = args.n
        self.rows: list[tuple[str, str, str]] = []   # (section, metric, value)
        from concurrent.futures import ThreadPoolExecutor
        self.prompt_worker = ThreadPoolExecutor(1, thread_name_prefix="prompt_worker")
        self.out: dict = {}

    def row(self, section: str, metric: str, value: str) -> None:
        self.rows.append((section, metric, value))
        log(f"{section:<10} {metric:<58} {value}")

    # setup ------------------------------------------------------------------
    def start(self) -> None:
        self.pack = load_pack()
        from comfyui_fal_edit.nodes import imaging, runtime
        from comfyui_fal_edit.nodes.caches import caches
        from comfyui_fal_edit.nodes.endpoints import BY_NODE
        from comfyui_fal_edit.nodes.host import Interrupted, host
        from comfyui_fal_edit.nodes.settings import FalSettings

        self.imaging, self.runtime, self.caches = imaging, runtime, caches
        self.BY_NODE, self.host, self.Interrupted = BY_NODE, host, Interrupted
        self.FalSettings = FalSettings
        self.emu = make_emulator(self.args.emulator)
        self.emu_cpu0 = self.emu.cpu_seconds()
        self.row("emulator", "where the fal emulator ran", self.emu.where)
        os.environ["COMFYUI_FAL_BASE_URL"] = self.emu.base_url
        os.environ["FAL_KEY"] = BENCH_KEY
        # The bench plays a ComfyUI owner who set no spending ceilings: it spends emulator
        # dollars by the hundred, all outside any ComfyUI prompt.
        import tempfile
        owner_dir = tempfile.mkdtemp(prefix="fal-bench-owner-")
        os.environ["COMFYUI_FAL_KEYS_FILE"] = os.path.join(owner_dir, "keys.json")
        from comfyui_fal_edit.nodes import server_settings
        server_settings.update({"max_usd_per_prompt": 0, "max_usd_per_day": 0})
        self.host.interrupt_requested = False

    def stop(self) -> None:
        cpu = self.emu.cpu_seconds()
        if cpu is not None:
            self.row("emulator", "emulator CPU used (s; fal's side of the work, not the node's)",
                     f"{cpu - self.emu_cpu0:.1f}")
        self.emu.stop()

    def fresh_emulator(self, **knobs) -> None:
        """Clear the emulator's log and knobs, then set `knobs`."""
        self.emu.reset()
        if knobs:
            self.emu.configure(**knobs)

    def node(self, name: str = ENDPOINT_NODE):
        return self.pack.NODE_CLASS_MAPPINGS[name]()

    def run_node(self, image, name: str = ENDPOINT_NODE, **values):
        """What ComfyUI does: call FUNCTION and await it on a fresh loop, in its one
        prompt-worker thread (not the main thread: there asyncio.run also installs and
        removes a SIGINT handler, and Python 3.11 formats the main task's repr, tensors
        and all, while removing it: ~15 ms for a batch of 8, which ComfyUI never pays)."""
        inst = self.node(name)
        return outputs(self.in_prompt_worker(getattr(inst, inst.FUNCTION)(image=image, **values)))

    def in_prompt_worker(self, coro):
        """Await `coro` on a fresh event loop in the prompt-worker thread."""
        return self.prompt_worker.submit(asyncio.run, coro).result()

    @staticmethod
    def settle() -> None:
        """Called before each timed run: a full garbage collection, so collecting garbage
        left by earlier runs (a generation-2 pass is ~80 ms in this process) is not
        charged to whichever run it happens to land in."""
        gc.collect()

    def log_mark(self) -> int:
        return self.emu.log_length()

    def since(self, mark: int, kind: str, entries: list | None = None):
        """Log entries of `kind` from index `mark` on (fetched unless given)."""
        if entries is None:
            entries = self.emu.log(mark)
        return [e for e in entries if e["kind"] == kind]

    def detect_lag(self, entries: list) -> list[float]:
        """Per request in `entries`: seconds from the job finishing on fal's side to
        the client fetching its result (how late completion was noticed)."""
        lags = []
        finished = {e["request_id"]: e["t"] for e in self.since(0, "finished", entries)}
        results = self.since(0, "result", entries)
        for sub in self.since(0, "submit", entries):
            rid = sub["request_id"]
            fetched = [e["t"] for e in results if e.get("request_id") == rid]
            if rid in finished and fetched:
                lags.append(min(fetched) - finished[rid])
        return lags

    # raw fal-client, by hand -------------------------------------------------
    async def raw_once(self, image) -> "object":
        """The same work as one node run, written directly against fal-client:
        tensor -> PNG (same level as the pack) -> upload -> submit -> handle.get()
        (fal-client's default 0.1 s poll) -> GET result -> decode -> float tensor."""
        import fal_client
        import httpx
        import numpy as np
        import torch
        from PIL import Image

        frame = image[0].mul(255.0).add(0.5).clamp(0, 255).to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, "PNG", compress_level=self.imaging.PNG_COMPRESS_LEVEL)
        # By hand, fal-client is pointed at the emulator through its module globals (the
        # pack never touches them: each of its runs has its own client), for this call only.
        import fal_client.client as fc
        from fal_emulator import client_globals
        saved = {name: getattr(fc, name) for name in client_globals("")}
        for name, value in client_globals(self.emu.base_url).items():
            setattr(fc, name, value)
        try:
            client = fal_client.AsyncClient(key=BENCH_KEY)
            url = await client.upload(buf.getvalue(), "image/png")
            handle = await client.submit(self.endpoint.endpoint_id,
                                         {**self.raw_payload, "image_url": url})
            result = await handle.get()
        finally:
            for name, value in saved.items():
                setattr(fc, name, value)
        async with httpx.AsyncClient(follow_redirects=True, timeout=60.0) as http:
            response = await http.get(result["images"][0]["url"])
            response.raise_for_status()
        with Image.open(io.BytesIO(response.content)) as img:
            arr = np.asarray(img.convert("RGB"))
        from comfyui_fal_edit.nodes.fal_transport import close_fal_client
        await close_fal_client(client)
        return torch.from_numpy(arr).unsqueeze(0).to(torch.float32).div_(255.0)

    # sections -----------------------------------------------------------------
    def overhead(self) -> None:
        self.fresh_emulator(latency_s=LATENCY_S)
        self.endpoint = self.BY_NODE[ENDPOINT_NODE]
        self.raw_payload = self.runtime.build_payload(self.endpoint, {})
        image = photo_like(1024, 1024)
        mp = 1024 * 1024 / 1e6
        off = self.FalSettings(cache="off")
        # warm-up: imports (fal_client, httpx), thread pools, first connections
        self.caches.clear()
        self.run_node(image, settings=off)
        self.in_prompt_worker(self.raw_once(image))
        node_t, raw_t, node_lag, raw_lag = [], [], [], []
        up_node = up_raw = 0
        for i in range(self.n):
            for which in (("node", "raw") if i % 2 == 0 else ("raw", "node")):
                self.caches.clear()        # both must really upload
                mark = self.log_mark()
                self.settle()
                t0 = time.perf_counter()
                if which == "node":
                    out = self.run_node(image, settings=off)[0]
                else:
                    out = self.in_prompt_worker(self.raw_once(image))
                dt = time.perf_counter() - t0
                assert out.shape == (1, 1024, 1024, 3), out.shape
                entries = self.emu.log(mark)
                ups = len(self.since(mark, "upload", entries))
                (node_t if which == "node" else raw_t).append(dt)
                (node_lag if which == "node" else raw_lag).extend(self.detect_lag(entries))
                if which == "node":
                    up_node += ups
                else:
                    up_raw += ups
        ratio = med(node_t) / med(raw_t)
        self.row("overhead", f"node, 1 image {mp:.2f} MP, fal latency {LATENCY_S:g}s (median s)",
                 f"{med(node_t):.3f}  [{min(node_t):.3f}..{max(node_t):.3f}]")
        self.row("overhead", "raw fal_client by hand, same work (median s)",
                 f"{med(raw_t):.3f}  [{min(raw_t):.3f}..{max(raw_t):.3f}]")
        self.row("overhead", "node added (median s)", f"{med(node_t) - med(raw_t):+.3f}")
        self.row("overhead", "overhead_ratio (goal <= 0.95)", f"{ratio:.3f}")
        self.row("overhead", "completion_notice_ms: fal done -> result asked for (median ms): "
                 "node / raw", f"{med(node_lag) * 1000:.1f} / {med(raw_lag) * 1000:.1f}")
        self.row("overhead", "uploads per rep: node / raw (must be 1 / 1)",
                 f"{up_node / self.n:g} / {up_raw / self.n:g}")
        self.out["overhead_ratio"] = round(ratio, 3)
        self.out["completion_notice_ms"] = round(med(node_lag) * 1000, 1)
        self.out["completion_notice_ms_raw_fal_client"] = round(med(raw_lag) * 1000, 1)
        self.out["overhead_node_s"] = round(med(node_t), 3)
        self.out["overhead_raw_s"] = round(med(raw_t), 3)

    def batch(self) -> None:
        self.fresh_emulator(latency_s=LATENCY_S, max_concurrency=None)
        reps = max(3, self.n)       # a median of 3 wandered by +-0.02 on this ratio
        frames = photo_like(1024, 1024, batch=8, seed=1)
        single = frames[:1].clone()
        default = self.FalSettings(cache="off")          # the default concurrency
        c4 = self.FalSettings(concurrency=4, cache="off")  # the old default, for comparison
        labels = {"b1": (single, default), "b8": (frames, default), "b8c4": (frames, c4)}
        times = {k: [] for k in labels}
        at_fal = {k: [] for k in labels}                 # submit -> finished, per request
        peak_live = {}
        for img, settings in labels.values():             # warm-up: threads, arenas, clients
            self.caches.clear()
            self.run_node(img, settings=settings, seed=99)
        for i in range(reps):
            for label, (img, settings) in labels.items():
                self.caches.clear()
                mark = self.log_mark()
                self.settle()
                t0 = time.perf_counter()
                out = self.run_node(img, settings=settings, seed=i)[0]
                times[label].append(time.perf_counter() - t0)
                assert out.shape[0] == img.shape[0]
                entries = self.emu.log(mark)
                subs = self.since(mark, "submit", entries)
                ids = {s["request_id"] for s in subs}
                fin = {e["request_id"]: e["t"] for e in self.since(mark, "finished", entries)
                       if e["request_id"] in ids}
                at_fal[label] += [fin[s["request_id"]] - s["t"] for s in subs
                                  if s["request_id"] in fin]
                peak_live[label] = max(peak_live.get(label, 0), _peak_overlap(subs, fin))
        r8 = med(times["b8"]) / med(times["b1"])
        r4 = med(times["b8c4"]) / med(times["b1"])
        d = self.FalSettings().concurrency
        self.row("batch", f"batch of 1, 1 MP, fal latency {LATENCY_S:g}s (median s)",
                 f"{med(times['b1']):.3f}  [{min(times['b1']):.3f}..{max(times['b1']):.3f}]")
        self.row("batch", f"batch of 8, default settings (concurrency={d}) (median s)",
                 f"{med(times['b8']):.3f}  [{min(times['b8']):.3f}..{max(times['b8']):.3f}]"
                 f"  (peak {peak_live['b8']} at fal)")
        self.row("batch", "batch of 8, concurrency=4 (median s)",
                 f"{med(times['b8c4']):.3f}  (peak {peak_live['b8c4']} at fal)")
        self.row("batch", "time at fal per request, submit -> finished (median s): 1 / 8 / 8c4",
                 " / ".join(f"{med(at_fal[k]):.3f}" for k in labels))
        self.row("batch", "batch8_over_single, default settings (goal <= 1.2; JSON)", f"{r8:.3f}")
        self.row("batch", "batch8_over_single, concurrency=4", f"{r4:.3f}")
        self.out["batch8_over_single"] = round(r8, 3)
        self.out["batch8_over_single_default_concurrency"] = d
        self.out["batch8_over_single_concurrency4"] = round(r4, 3)
        self.batch_reps = reps

    def stream(self) -> None:
        """How many status requests a job costs: fal pushes status changes on its stream."""
        job_s = 12.0
        self.fresh_emulator(latency_s=job_s, progress_steps=6)
        image = photo_like(256, 256, batch=2, seed=5)
        mark = self.log_mark()
        t0 = time.perf_counter()
        self.run_node(image, settings=self.FalSettings(cache="off"), seed=3)
        wall = time.perf_counter() - t0
        entries = self.emu.log(mark)
        jobs = len(self.since(mark, "submit", entries))
        streams = len(self.since(mark, "status_stream", entries))
        polls = len(self.since(mark, "status", entries))
        per_job = (streams + polls) / jobs
        lag = self.detect_lag(entries)
        self.row("stream", f"{jobs} jobs of {job_s:g}s: status streams / status polls",
                 f"{streams} / {polls}  ({wall:.1f}s)")
        self.row("stream", "status_requests_per_job (goal <= 3; JSON)", f"{per_job:g}")
        self.row("stream", "completion noticed after (median ms) on a long job",
                 f"{med(lag) * 1000:.1f}")
        self.out["status_requests_per_job"] = round(per_job, 2)

    def list_input(self) -> None:
        """A list input: ComfyUI calls the node once per item, all at once on one loop."""
        latency = 2.0
        count = 16 if self.args.quick else 64
        self.fresh_emulator(latency_s=latency, max_concurrency=None)
        sides = [(384 + 32 * (i % 5), 320 + 32 * (i % 3)) for i in range(count)]
        images = [photo_like(w, h, seed=100 + i) for i, (w, h) in enumerate(sides)]
        settings = self.FalSettings(concurrency=count, cache="off")

        async def comfy_list(imgs):
            node = self.node()
            calls = [getattr(node, node.FUNCTION)(image=img, settings=settings, seed=i)
                     for i, img in enumerate(imgs)]
            return await asyncio.gather(*calls)

        self.in_prompt_worker(comfy_list(images[:1]))     # warm-up
        single, many = [], []
        for _ in range(max(2, self.n - 2)):
            self.caches.clear()
            self.settle()
            t0 = time.perf_counter()
            self.in_prompt_worker(comfy_list(images[:1]))
            single.append(time.perf_counter() - t0)
            self.caches.clear()
            mark = self.log_mark()
            self.settle()
            t0 = time.perf_counter()
            outs = self.in_prompt_worker(comfy_list(images))
            many.append(time.perf_counter() - t0)
            assert len(outs) == count
            entries = self.emu.log(mark)
            subs = self.since(mark, "submit", entries)
            fin = {e["request_id"]: e["t"] for e in self.since(mark, "finished", entries)}
            peak = _peak_overlap(subs, fin)
        ratio = med(many) / med(single)
        self.row("list", f"list of 1, fal latency {latency:g}s (median s)", f"{med(single):.3f}")
        self.row("list", f"list of {count} images of 5 sizes, concurrency={count} (median s)",
                 f"{med(many):.3f}  (peak {peak} at fal)")
        self.row("list", f"list{count}_over_single (goal <= 1.5; JSON)", f"{ratio:.3f}")
        self.out[f"list{count}_over_single"] = round(ratio, 3)
        self.out[f"list{count}_s"] = round(med(many), 3)

    def reuse(self) -> None:
        self.fresh_emulator(latency_s=0.05)
        self.caches.clear()
        image = photo_like(512, 512, seed=7)
        use = self.FalSettings()
        off = self.FalSettings(cache="off")

        def counted(fn):
            mark = self.log_mark()
            result = fn()
            entries = self.emu.log(mark)
            return (result, len(self.since(mark, "upload", entries)),
                    len(self.since(mark, "submit", entries)))

        _, first_up, _ = counted(lambda: self.run_node(image, settings=use, seed=3))
        _, same_up, same_sub = counted(lambda: self.run_node(image, settings=use, seed=3))
        _, off_up, off_sub = counted(lambda: self.run_node(image, settings=off, seed=3))
        _, widget_up, widget_sub = counted(lambda: self.run_node(image, settings=use, seed=4))
        self.row("reuse", "first run: uploads", f"{first_up}")
        self.row("reuse", "rerun, same widgets, cache=use: uploads / fal calls (trivial)",
                 f"{same_up} / {same_sub}")
        self.row("reuse", "rerun, cache=off: uploads / fal calls", f"{off_up} / {off_sub}")
        self.row("reuse", "rerun, changed seed: uploads / fal calls", f"{widget_up} / {widget_sub}")
        # chain: one fal node's output feeds another
        (first_out, _, _), _, _ = counted(lambda: self.run_node(image, settings=use, seed=5))
        _, chain_up, chain_sub = counted(
            lambda: self.run_node(first_out, name=CHAIN_NODE, settings=use))
        self.row("reuse", f"chain {ENDPOINT_NODE} -> {CHAIN_NODE}: 2nd node uploads / fal calls",
                 f"{chain_up} / {chain_sub}")
        assert off_sub == 1 and widget_sub == 1 and chain_sub == 1
        self.out["rerun_uploads"] = max(off_up, widget_up)
        self.out["rerun_uploads_same_widgets_cache_use"] = same_up
        self.out["chain_uploads"] = chain_up

    def interrupt(self) -> None:
        self.fresh_emulator(latency_s=20.0)       # never finishes on its own
        image = photo_like(256, 256, batch=2, seed=9)
        reps = self.n + 1
        WATCH = getattr(self.runtime, "WATCH_S", 0.25)
        results = {"flag": [], "cancel": []}
        node_ends = {"flag": [], "cancel": []}

        async def one(mode: str, phase: float):
            inst = self.node()
            mark = await asyncio.to_thread(self.log_mark)
            task = asyncio.create_task(inst.run(image=image, settings=self.FalSettings(
                cache="off")))
            # poll off the loop: a blocking HTTP call here would stall the node
            while len(await asyncio.to_thread(self.since, mark, "submit")) < 2:
                if task.done():
                    raise RuntimeError(f"node ended early: {task.exception()!r}")
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3 + phase)      # spread over the runtime's watch cadence
            t0 = time.monotonic()
            if mode == "flag":
                self.host.interrupt_requested = True
            else:
                task.cancel()
            try:
                await task
                raise RuntimeError("node was not interrupted")
            except (self.Interrupted, asyncio.CancelledError):
                pass
            t_end = time.monotonic()
            self.host.interrupt_requested = False
            cancels = self.since(mark, "cancel")
            if len(cancels) < 2:
                raise RuntimeError(f"{mode}: fal saw {len(cancels)} cancel(s) for 2 requests")
            return max(e["t"] for e in cancels) - t0, t_end - t0

        for mode in ("flag", "cancel"):
            for i in range(reps):
                self.caches.clear()
                lat, end = asyncio.run(one(mode, WATCH * i / reps))
                results[mode].append(lat)
                node_ends[mode].append(end)
        f, c = results["flag"], results["cancel"]
        self.row("interrupt", "interrupt flag -> fal cancel, 2 running (median / max s)",
                 f"{med(f):.3f} / {max(f):.3f}")
        self.row("interrupt", "task.cancel() -> fal cancel, 2 running (median / max s)",
                 f"{med(c):.3f} / {max(c):.3f}")
        self.row("interrupt", "interrupt flag -> node returns (median s)",
                 f"{med(node_ends['flag']):.3f}")
        self.out["interrupt_to_cancel_s"] = round(max(med(f), med(c)), 3)
        self.out["interrupt_to_cancel_max_s"] = round(max(max(f), max(c)), 3)

    def import_time(self) -> None:
        py = sys.executable
        torch_only = ("import time; t=time.perf_counter(); import torch; "
                      "print(time.perf_counter()-t)")
        loader = ("import importlib.util, sys; "
                  "spec = importlib.util.spec_from_file_location(%r, %r, "
                  "submodule_search_locations=[%r]); "
                  "m = importlib.util.module_from_spec(spec); sys.modules[%r] = m; "
                  "spec.loader.exec_module(m)") % (PACK_NAME, str(ROOT / "__init__.py"),
                                                   str(ROOT), PACK_NAME)
        pack = "import time; t=time.perf_counter(); %s; print(time.perf_counter()-t)" % loader
        # the pack after torch (ComfyUI has torch loaded when it imports custom nodes)
        after = ("import time, sys; import torch; t=time.perf_counter(); %s; "
                 "m=[k for k in sys.modules if k.split('.')[0] in ('fal_client','httpx')]; "
                 "print(time.perf_counter()-t, len(m))") % loader
        reps = max(3, self.n)

        def run(code):
            out = subprocess.run([py, "-c", code], capture_output=True, text=True, check=True,
                                 cwd=str(ROOT))
            return out.stdout.split()

        t_torch, t_pack, t_after, heavy = [], [], [], 0
        run(pack)                                  # warm the OS file cache
        for _ in range(reps):
            t_torch.append(float(run(torch_only)[0]))
            t_pack.append(float(run(pack)[0]))
            a, h = run(after)
            t_after.append(float(a))
            heavy = max(heavy, int(h))
        delta = med(t_pack) - med(t_torch)
        self.row("import", "fresh interpreter: import torch (median s)", f"{med(t_torch):.3f}")
        self.row("import", "fresh interpreter: import the pack, torch included (median s)",
                 f"{med(t_pack):.3f}")
        self.row("import", "import_s = pack - torch (goal <= 0.2)", f"{delta:.3f}")
        self.row("import", "pack with torch already loaded (median s)", f"{med(t_after):.3f}")
        self.row("import", "fal_client/httpx modules loaded at import (lazy = 0)", f"{heavy}")
        self.out["import_s"] = round(delta, 3)

    def codec(self) -> None:
        from PIL import Image

        from comfyui_fal_edit.nodes.stages import results as results_stage
        imaging = self.imaging
        w = h = 1024
        mp = w * h / 1e6
        image = photo_like(w, h, seed=11)
        limits = self.BY_NODE[ENDPOINT_NODE].limits
        reps = max(5, self.n * 2)

        def timed(fn):
            fn()
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return med(ts) * 1000 / mp

        frames = imaging.frames_to_uint8(image, "image")
        prepared = imaging.prepare(frames[0], limits)
        t_u8 = timed(lambda: imaging.frames_to_uint8(image, "image"))
        t_prep = timed(lambda: imaging.prepare(frames[0], limits))
        t_png = timed(lambda: imaging.encode(prepared, "png"))
        t_jpg = timed(lambda: imaging.encode(prepared, "jpeg"))
        encode_total = timed(lambda: imaging.encode(
            imaging.prepare(imaging.frames_to_uint8(image, "image")[0], limits), "png"))
        png_bytes = imaging.encode(prepared, "png")[0]
        # what fal sends back by default for this endpoint: JPEG (the emulator uses quality 92)
        buf = io.BytesIO()
        Image.fromarray(frames[0]).save(buf, "JPEG", quality=92)
        jpg_bytes = buf.getvalue()
        t_djpg = timed(lambda: imaging.decode(jpg_bytes))
        t_dpng = timed(lambda: imaging.decode(png_bytes))
        decoded = imaging.decode(jpg_bytes)
        t_digest = timed(lambda: imaging.pixel_digest(decoded))
        t_tensor = timed(lambda: results_stage.stack([decoded]))
        decode_total = timed(lambda: results_stage.stack([d for d in [imaging.decode(jpg_bytes)]
                                                     if imaging.pixel_digest(d)]))
        self.row("codec", "tensor -> uint8 (ms/MP)", f"{t_u8:.1f}")
        self.row("codec", "prepare: fit limits + pixel digest (ms/MP)", f"{t_prep:.1f}")
        self.row("codec", f"PNG encode, level {imaging.PNG_COMPRESS_LEVEL} (ms/MP; "
                          f"{len(png_bytes) / 1e6:.2f} MB/MP)", f"{t_png:.1f}")
        self.row("codec", "JPEG encode q95, upload_format=jpeg (ms/MP)", f"{t_jpg:.1f}")
        self.row("codec", "encode_ms_per_mp: tensor -> PNG upload bytes", f"{encode_total:.1f}")
        self.row("codec", "JPEG decode (fal's default result) (ms/MP)", f"{t_djpg:.1f}")
        self.row("codec", "PNG decode (ms/MP)", f"{t_dpng:.1f}")
        self.row("codec", "result pixel digest, for chain reuse (ms/MP)", f"{t_digest:.1f}")
        self.row("codec", "uint8 -> float tensor (ms/MP)", f"{t_tensor:.1f}")
        self.row("codec", "decode_ms_per_mp: JPEG bytes -> tensor (incl. digest)",
                 f"{decode_total:.1f}")
        self.out["encode_ms_per_mp"] = round(encode_total, 1)
        self.out["decode_ms_per_mp"] = round(decode_total, 1)

    def memory(self) -> None:
        self.fresh_emulator(latency_s=0.5)
        side = 1024 if self.args.quick else 2048
        self.caches.clear()
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(side)],
            capture_output=True, text=True, cwd=str(ROOT),
            env={**os.environ, "COMFYUI_FAL_BASE_URL": self.emu.base_url, "FAL_KEY": BENCH_KEY})
        if out.returncode != 0:
            raise RuntimeError(f"memory child failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mp = side * side / 1e6
        self.row("memory", f"batch of 8 x {mp:.1f} MP input tensor (MiB)", f"{r['tensor_mb']:.0f}")
        self.row("memory", "peak RSS above start, through the node (MiB)",
                 f"{r['peak_mb']:.0f}  ({r['peak_mb'] / r['tensor_mb']:.2f}x tensor; "
                 f"goal <= 1.5x; {r['method']})")
        self.row("memory", "RSS kept after the run (output tensor + result memory) (MiB)",
                 f"{r['after_mb']:.0f}")
        self.row("memory", "wall time of that run (s)", f"{r['wall_s']:.1f}")
        self.out["peak_rss_mb_batch8_4mp"] = round(r["peak_mb"], 1)
        self.out["batch8_4mp_tensor_mb"] = round(r["tensor_mb"], 1)
        if self.args.quick:
            self.out["peak_rss_note"] = "--quick: 1 MP frames, not 4 MP"


def _peak_overlap(submits: list, finished: dict) -> int:
    """The most requests at fal at once, from submit and finish times."""
    edges = sorted([(s["t"], 1) for s in submits] +
                   [(t, -1) for rid, t in finished.items()
                    if rid in {s["request_id"] for s in submits}])
    live = best = 0
    for _, change in edges:
        live += change
        best = max(best, live)
    return best


# -- memory child ---------------------------------------------------------------

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_child(side: int) -> None:
    """Run one batch of 8 through the node in this fresh process and report
    peak RSS above the point right after the input tensor exists."""
    import torch  # noqa: F401

    pack = load_pack()
    from comfyui_fal_edit.nodes.settings import FalSettings

    image = photo_like(side, side, batch=8, seed=21)
    tensor_mb = image.numel() * image.element_size() / 2**20
    # warm the imports the run will make, with a tiny image, so that their
    # memory is not counted as the batch's
    inst = pack.NODE_CLASS_MAPPINGS[ENDPOINT_NODE]()
    asyncio.run(inst.run(image=photo_like(64, 64), settings=FalSettings(cache="off")))
    gc.collect()
    method = "VmHWM after clear_refs"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                      # reset the peak-RSS counter (Linux >= 4.0)
    except OSError:
        method = "sampled VmRSS"
    start_kb = _status_kb("VmRSS")
    peak = [start_kb]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _status_kb("VmRSS"))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    out = outputs(asyncio.run(inst.run(image=image, seed=1)))   # default settings, as a user would
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    assert out[0].shape == image.shape, out[0].shape
    peak_kb = max(peak[0], _status_kb("VmHWM") if method.startswith("VmHWM") else 0)
    after_kb = _status_kb("VmRSS")
    print(json.dumps({"tensor_mb": tensor_mb, "peak_mb": (peak_kb - start_kb) / 1024,
                      "after_mb": (after_kb - start_kb) / 1024, "wall_s": wall,
                      "method": method}))


# -- main -------------------------------------------------------------------------

SECTIONS = ("overhead", "batch", "stream", "list", "reuse", "interrupt", "import", "codec",
            "memory")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="")
    parser.add_argument("--emulator", choices=("process", "thread"), default="process",
                        help="where the fal emulator runs (default: its own process)")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.n is None:
        args.n = 3 if args.quick else 5
    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    t_start = time.perf_counter()
    bench = Bench(args)
    bench.start()
    try:
        for name in SECTIONS:
            if name in only:
                log(f"-- {name}")
                getattr(bench, {"import": "import_time", "list": "list_input"}.get(name, name))()
    finally:
        bench.stop()
    bench.out["n"] = args.n
    total = time.perf_counter() - t_start

    width = max(len(m) for _, m, _ in bench.rows)
    where = "own process" if args.emulator == "process" else "in-process thread"
    print(f"\nfal node pack benchmark — emulator in {where}, fal latency {LATENCY_S:g}s, "
          f"n={args.n}, {os.cpu_count()} CPUs, {total:.0f}s total")
    print(f"{'section':<10} {'metric':<{width}}  value")
    print(f"{'-' * 10} {'-' * width}  {'-' * 24}")
    for section, metric, value in bench.rows:
        print(f"{section:<10} {metric:<{width}}  {value}")
    print(json.dumps(bench.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
