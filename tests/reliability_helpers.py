"""Helpers for test_reliability.py: guarded node runs, socket/fd/RSS probes, the
one-sentence check and the suite's tally."""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from conftest import pack

# The suite's figures; printed (and saved) once at the end of the module.
TALLY: dict[str, int] = {"tried": 0, "recovered": 0, "clear": 0, "hangs": 0, "lost": 0,
                         "key": 0}
FIGURES: list[str] = []
SUMMARY_FILE = "/tmp/comfyui_fal_reliability_summary.txt"

# Words that start the "fix" half of a sentence ("...; run again later").
FIX_WORDS = ("run", "check", "change", "raise", "lower", "copy", "set", "connect", "pick", "add",
             "shorten", "write", "type", "enter", "fix", "wait", "top up", "delete", "make",
             "try")


def summary_line() -> str:
    t = TALLY
    return (f"reliability: faults tried {t['tried']} / recovered {t['recovered']} / clear errors "
            f"{t['clear']} / hangs {t['hangs']} / lost items {t['lost']} / key occurrences "
            f"{t['key']}")


def sentence_problems(message: str, display_name: str) -> list[str]:
    """Why `message` is not ONE sentence 'Node: cause; fix.' (empty list: it is)."""
    problems = []
    prefix = display_name + ": "
    if not message.startswith(prefix):
        problems.append(f"does not start with {prefix!r}")
    body = message[len(prefix):]
    if "\n" in message:
        problems.append("spans several lines")
    if not message.endswith("."):
        problems.append("does not end with a full stop")
    if re.search(r"[.!?]\s+[A-Z]", body.rstrip(".")):
        problems.append("holds more than one sentence")
    if re.search(r"<[A-Za-z/!][^>]*>", message):
        problems.append("carries HTML markup")
    if re.search(r"object at 0x[0-9a-f]+|Traceback|File \"", message):
        problems.append("carries a Python object or traceback")
    if ".." in message or ".;" in message:
        problems.append("has broken punctuation")
    fix = body.rsplit(";", 1)[-1].strip().lower() if ";" in body else ""
    if not fix or not any(w in fix for w in FIX_WORDS):
        problems.append("names no fix after ';'")
    return problems


# -- probes -------------------------------------------------------------------------

def fd_count() -> int:
    """Open file descriptors, minus the result cache's SQLite index (kept open on purpose)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").endswith((".sqlite", ".sqlite-journal")):
                continue
        except OSError:
            continue
        count += 1
    return count


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def client_sockets(port: int) -> int:
    """Open TCP sockets of this process whose remote end is `port` (the emulator):
    the pack's connections, not the in-process emulator's own server sockets."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[9] in inodes and int(parts[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def other_tasks() -> list[asyncio.Task]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


# -- a node run with a hang guard -----------------------------------------------------

def result_of(returned: Any) -> Any:
    """A node's outputs, whether it returns a tuple or ComfyUI's {"ui": ..., "result": ...}."""
    return returned["result"] if isinstance(returned, dict) and "result" in returned else returned


@dataclass
class Outcome:
    value: Any = None
    ui: Any = None
    error: BaseException | None = None
    elapsed: float = 0.0
    hung: bool = False
    leftover_tasks: list[str] = field(default_factory=list)


async def settle() -> None:
    """Let cancelled tasks process their cancellation (two loop turns)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def guarded(name: str, bound_s: float, **inputs: Any) -> Outcome:
    node = pack.NODE_CLASS_MAPPINGS[name]()
    out = Outcome()
    t0 = time.monotonic()
    try:
        returned = await asyncio.wait_for(node.run(**inputs), bound_s)
        out.value = result_of(returned)
        out.ui = returned.get("ui") if isinstance(returned, dict) else None
    except asyncio.TimeoutError:
        out.hung = True
    except BaseException as exc:  # noqa: BLE001 - classified by the caller
        out.error = exc
    out.elapsed = time.monotonic() - t0
    await settle()
    out.leftover_tasks = [repr(t.get_coro()) for t in other_tasks()]
    return out


def run_guarded(name: str, bound_s: float, **inputs: Any) -> Outcome:
    return asyncio.run(guarded(name, bound_s, **inputs))


def results_fail_with_a_bill(monkeypatch, units: str) -> None:
    """Every result the emulator serves is a 500 error that says fal billed `units` (fal
    sends x-fal-billable-units on error answers too)."""
    from aiohttp import web
    from fal_emulator.server import EmulatorServer

    def failed_but_billed(self, job):
        return web.json_response({"detail": "Internal error"}, status=500,
                                 headers={"x-fal-billable-units": units,
                                          "x-fal-request-id": job.id})

    monkeypatch.setattr(EmulatorServer, "_result_response", failed_but_billed)
