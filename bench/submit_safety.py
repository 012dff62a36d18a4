"""Jobs fal made per node call when answers are lost, a locked account, a queue deadline
(issue 20, items 1, 4 and 5).

The emulator (this checkout's) plays fal; the node code comes from --pack, so an older
checkout gives the "before" figures:

    .venv/bin/python bench/submit_safety.py                      # this checkout
    .venv/bin/python bench/submit_safety.py --pack /tmp/before   # e.g. `git archive` of main

Each line is one fal Color Correction call on one image (fal Settings' defaults, the
fal-client retry budget users get):

  lost N     fal accepts the submit (the job runs and is billed) but the answer is lost,
             N times in a row: jobs fal made, and how the call ended
  locked     a batch of 8 on an account fal locked (exhausted balance): submits, ending
  queue      fal's queue does not start the job within the node's timeout: jobs that
             started (were billed), and how the call ended

Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-submit-0001"
NODE = "FalColorCorrection"



def image():
    import torch
    torch.manual_seed(0)
    return torch.rand(1, 64, 96, 3)


async def call(pack, batch: int = 1, **settings):
    """One node call: (ended with, the node's last status line)."""
    import torch
    from comfyui_fal_edit.nodes.host import host
    from comfyui_fal_edit.nodes.settings import FalSettings

    seen: list[str] = []
    host.status_listener = lambda node_id, text: seen.append(text)
    node = pack.NODE_CLASS_MAPPINGS[NODE]()
    try:
        frames = torch.cat([image()] * batch) + torch.linspace(0, 0.1, batch)[:, None, None, None]
        await node.run(image=frames.clamp(0, 1), settings=FalSettings(cache="off", **settings))
        ended = "result arrived"
    except Exception as exc:   # the figure is the count; the sentence says how it ended
        ended = f"failed: {exc}"
    finally:
        host.status_listener = None
    return ended, (seen[-1].splitlines()[0] if seen else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pack", default=str(ROOT))
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from fal_emulator import FalEmulator
    from tools.pack_loader import load_pack

    scratch = tempfile.mkdtemp(prefix="submit-safety-")
    with FalEmulator() as emulator:
        os.environ.update(COMFYUI_FAL_BASE_URL=emulator.base_url, FAL_KEY=KEY,
                          COMFYUI_FAL_CACHE_DIR=scratch + "/cache",
                          COMFYUI_FAL_KEYS_FILE=scratch + "/keys.json")
        pack = load_pack(Path(args.pack).resolve())
        state = emulator.state
        print(f"pack: {args.pack}")
        for losses in (1, 3, 5, 10):
            emulator.reset()
            state.add_fault("submit", "lost_answer", times=losses)
            t0 = time.monotonic()
            ended, status = asyncio.run(call(pack))
            print(f"lost {losses:<3} jobs {state.count('submit'):2}   "
                  f"{time.monotonic() - t0:5.1f}s   {ended}")
            if ended == "result arrived":
                print(f"          status: {status}")

        emulator.reset()
        state.locked_keys = {KEY}
        ended, _ = asyncio.run(call(pack, batch=8))
        print(f"locked    submits {state.count('submit')} of 8   {ended}")

        emulator.reset()
        state.queue_delay_s = 30.0
        t0 = time.monotonic()
        ended, _ = asyncio.run(call(pack, timeout_s=5.0))
        time.sleep(0.5)
        started = sum(1 for e in state.entries("finished") if e.get("started"))
        print(f"queue     jobs {state.count('submit')}, started {started}   "
              f"{time.monotonic() - t0:5.1f}s   {ended}")


if __name__ == "__main__":
    main()
