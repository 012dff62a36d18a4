"""The owner's ceilings against the five ways issue 20 found to pass them, played on the
local fal emulator (which bills like fal, fal_emulator/billing.py). For each: the ceiling,
the submits that reached the emulator, what it billed, what the pack counted, and whether
the ceiling held (counted >= billed and billed <= ceiling + one request).

    .venv/bin/python bench/ceiling_scenarios.py [--pack PATH]

--pack measures another checkout of the pack (e.g. one made with `git archive` of an
older commit) against this tree's emulator: the figures before and after a change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tools.pack_loader import load_pack  # noqa: E402

PRODUCT_SHOT = "fal-ai/bria/product-shot"          # $0.04 an image at the emulator
LCM = "fal-ai/fast-lcm-diffusion/image-to-image"   # $0.025 a megapixel
LAYERED = "fal-ai/qwen-image-layered"              # $0.05 an image
SEEDREAM = "fal-ai/bytedance/seedream/v4.5/edit"   # $0.04 an image



def frames(batch: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.random((batch, size, size, 3)).astype(np.float32))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", default=str(ROOT), help="the pack checkout to measure")
    args = parser.parse_args()

    from fal_emulator import FalEmulator, billing
    from fal_emulator.server import EmulatorServer

    emulator = FalEmulator().start()
    os.environ.update({"COMFYUI_FAL_BASE_URL": emulator.base_url,
                       "FAL_KEY": "bench-key-not-a-real-fal-key"})
    pack = load_pack(Path(args.pack).resolve())
    from comfyui_fal_edit.nodes import caches, pricing, server_settings
    from comfyui_fal_edit.nodes.host import host
    from comfyui_fal_edit.nodes.settings import FalSettings
    host.status_listener = lambda node_id, text: None
    rows = []

    def fresh(**owner) -> None:
        work = Path(tempfile.mkdtemp(prefix="fal-ceiling-"))
        os.environ["COMFYUI_FAL_CACHE_DIR"] = str(work / "cache")
        os.environ["COMFYUI_FAL_KEYS_FILE"] = str(work / "keys" / "keys.json")
        caches.caches.clear()
        pricing.prices.clear()
        pricing.price_refresh.reset()
        pricing.ledger.clear()
        emulator.reset()
        server_settings.update(owner)

    def run(endpoint: str, arguments: dict, settings: FalSettings | None = None, **sockets):
        node = pack.NODE_CLASS_MAPPINGS["FalImageEndpoint"]()
        settings = settings or FalSettings(max_usd_per_prompt=0.0, max_usd_per_session=0.0)
        try:
            asyncio.run(node.run(endpoint=endpoint, arguments=json.dumps(arguments),
                                 settings=settings, **sockets))
            return "ran"
        except Exception as exc:   # the figures say what happened
            text = str(exc)
            return "refused by the guard" if "spend guard" in text else "failed: " + \
                text.split(": ", 1)[-1][:60]

    def spent_today() -> float:
        try:
            return server_settings.spent_today()
        except Exception:   # a damaged file: this pack may refuse to read it
            return float("nan")

    def record(name: str, ceiling: float, per_request: float, outcome: str,
               headroom: float | None = None) -> None:
        """headroom: what the ceiling had left before the run (all of it by default)."""
        time.sleep(0.3)   # a cancelled job the emulator finishes is billed when it ends
        billed = billing.total_usd(emulator.state)
        today = spent_today()
        counted = max(pricing.ledger.spent(), today if today == today else 0.0)
        left = ceiling if headroom is None else headroom
        held = counted >= billed - 1e-9 and billed <= left + per_request + 1e-9
        rows.append((name, ceiling, emulator.state.count("submit"), billed, counted, held,
                     outcome))

    # 1. A catalogue price quoted $0 by an allowed server.
    original = EmulatorServer.pricing

    async def quoting_zero(self, request):
        return EmulatorServer._json_prices({PRODUCT_SHOT: (0.0, "image")})

    EmulatorServer.pricing = quoting_zero            # bound by the server made next
    other = FalEmulator().start()
    EmulatorServer.pricing = original
    try:
        fresh(allowed_servers=[other.base_url], max_usd_per_prompt=1.0)
        run(PRODUCT_SHOT, {}, FalSettings(base_url=other.base_url), image=frames(1))
        emulator.reset()
        pricing.ledger.clear()    # the one request to the allowed server is not the point
        outcome = run(PRODUCT_SHOT, {}, image=frames(40, seed=1))
        record("1. $0 quoted by an allowed server, 40 requests", 1.0, 0.04, outcome)
    finally:
        other.stop()

    # 2. Output size set by the arguments: 20 frames of 8x8, image_size square, 4 images.
    fresh(max_usd_per_prompt=1.0)
    outcome = run(LCM, {"prompt": "x", "image_size": "square", "num_images": 4},
                  image=frames(20, seed=2))
    record("2. image_size on a per-MP endpoint, 20 x 4 images", 1.0, 0.1, outcome)

    # 3. Count inputs: automatic placement x num_results 4, 3 frames; Qwen's 4 layers.
    fresh(max_usd_per_prompt=1.0)
    outcome = run(PRODUCT_SHOT, {"placement_type": "automatic", "num_results": 4},
                  image=frames(3, seed=3))
    record("3a. automatic placement, num_results 4, 3 frames", 1.0, 1.6, outcome)
    fresh(max_usd_per_prompt=1.0)
    outcome = run(LAYERED, {}, image=frames(1, seed=4))
    record("3b. Qwen Image Layered, default 4 layers", 1.0, 0.2, outcome)

    # 4. Work fal did that the pack refuses: num_images 4.0; a job the timeout cancels.
    fresh(max_usd_per_prompt=1.0)
    outcome = run(SEEDREAM, {"prompt": "x", "num_images": 4.0}, image=frames(1, seed=5))
    record("4a. num_images 4.0", 1.0, 0.16, outcome)
    fresh(max_usd_per_prompt=1.0)
    emulator.state.latency_s = 2.0
    outcome = run(PRODUCT_SHOT, {}, FalSettings(timeout_s=0.5, max_usd_per_prompt=0,
                                                max_usd_per_session=0), image=frames(4, seed=6))
    emulator.state.latency_s = 0.0
    time.sleep(2.0)                               # fal finishes the cancelled jobs
    record("4b. 4 jobs cancelled by timeout_s", 1.0, 0.04, outcome)

    # 5. A damaged daily spend file: today at $19.99 of $20, truncated.
    fresh(max_usd_per_day=20.0)
    path = Path(os.environ["COMFYUI_FAL_KEYS_FILE"]).parent / "spend_by_day.json"
    path.write_text('{"%s": 19.99' % time.strftime("%Y-%m-%d"))
    outcome = run(PRODUCT_SHOT, {}, image=frames(10, seed=7))
    ok = path.read_text().startswith('{"%s": 19.99' % time.strftime("%Y-%m-%d"))
    record(f"5. truncated spend file at $19.99 ({'kept' if ok else 'overwritten'})", 20.0,
           0.04, outcome, headroom=0.01)
    emulator.stop()

    print(f"pack: {args.pack}")
    print(f"{'scenario':<52} {'ceiling':>8} {'submits':>7} {'billed':>8} {'counted':>8}  "
          f"{'held':<5} outcome")
    for name, ceiling, submits, billed, counted, held, outcome in rows:
        print(f"{name:<52} {'$%.2f' % ceiling:>8} {submits:>7} {'$%.2f' % billed:>8} "
              f"{'$%.2f' % counted:>8}  {'yes' if held else 'NO':<5} {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
