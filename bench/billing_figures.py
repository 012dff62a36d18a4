"""The ledger against the bill: runs the ten nodes and five catalogue endpoints on the
local fal emulator, which bills like fal (fal_emulator/billing.py: images, megapixels
rounded up, seconds run rounded up) and sends each request's x-fal-billable-units, then
prints, per node, the pack's estimate, what its ledger says fal billed, and the
emulator's own bill; the totals; and an excerpt of the ledger (the fal Spend node's
table).

    .venv/bin/python bench/billing_figures.py [--latency 1.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.pack_loader import load_pack  # noqa: E402

# Catalogue endpoints billed each way the emulator bills: per megapixel of an output the
# arguments size, per megapixel scaled from the input, per image with a choice that makes
# ten, per image with a count left to fal's default, per second.
CATALOGUE = [
    ("fal-ai/fast-lcm-diffusion/image-to-image",
     {"prompt": "a watercolour street", "image_size": "square_hd", "num_images": 2}),
    ("clarityai/crystal-upscaler", {"scale_factor": 3}),
    ("fal-ai/bria/product-shot", {"placement_type": "automatic"}),
    ("fal-ai/qwen-image-layered", {}),
    ("fal-ai/aura-sr", {"upscale_factor": 2}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=1.2,
                        help="emulated processing time per request (per-second billing)")
    args = parser.parse_args()

    from fal_emulator import FalEmulator, billing

    work = Path(tempfile.mkdtemp(prefix="fal-billing-"))
    emulator = FalEmulator().start()
    emulator.state.latency_s = args.latency
    os.environ.update({"COMFYUI_FAL_BASE_URL": emulator.base_url,
                       "FAL_KEY": "bench-key-not-a-real-fal-key",
                       "COMFYUI_FAL_CACHE_DIR": str(work / "cache"),
                       "COMFYUI_FAL_KEYS_FILE": str(work / "keys" / "keys.json")})
    pack = load_pack()
    from comfyui_fal_edit.nodes import pricing, server_settings
    from comfyui_fal_edit.nodes.endpoints import ENDPOINTS
    from comfyui_fal_edit.nodes.host import host
    from comfyui_fal_edit.nodes.settings import FalSettings
    from demo.run_demo import ASSETS, load_image

    host.status_listener = lambda node_id, text: None
    no_limit = FalSettings(max_usd_per_prompt=0.0, max_usd_per_session=0.0)
    server_settings.update({"max_usd_per_prompt": 0, "max_usd_per_day": 0})
    asyncio.run(pricing.prices.refresh(os.environ["FAL_KEY"], emulator.base_url))
    portrait = load_image(ASSETS / "sample_portrait.png")
    duckling = load_image(ASSETS / "sample_duckling.png")

    def run(name: str, **inputs) -> dict:
        node = pack.NODE_CLASS_MAPPINGS[name]()
        answer = getattr(node, node.FUNCTION)(settings=no_limit, **inputs)
        return asyncio.run(answer) if asyncio.iscoroutine(answer) else answer

    rows = []
    try:
        jobs = [(e.display_name, e.node_name, {"image_1": portrait, "image_2": duckling}
                 if e.multi_image_sockets else {"image": portrait}) for e in ENDPOINTS]
        jobs += [(endpoint_id, "FalImageEndpoint",
                  {"endpoint": endpoint_id, "arguments": json.dumps(arguments),
                   "image": portrait}) for endpoint_id, arguments in CATALOGUE]
        for title, name, inputs in jobs:
            before = len(emulator.state.entries("billed"))
            ui = run(name, **inputs)["ui"]
            bill = sum(e["usd"] or 0.0 for e in emulator.state.entries("billed")[before:])
            rows.append((title, ui["fal_cost"][0], ui["fal_billed"][0], bill))
    finally:
        emulator.stop()

    print(f"{'node / endpoint':<44} {'estimate':>9} {'ledger: billed':>15} {'emulator bill':>14}")
    for title, estimated, billed, bill in rows:
        shown = "estimate" if billed is None else f"${billed:.4f}"
        print(f"{title[:44]:<44} {'$%.4f' % estimated:>9} {shown:>15} {'$%.4f' % bill:>14}")
    ledger_billed = sum(e.billed_usd or 0.0 for e in pricing.ledger.entries())
    emulator_bill = billing.total_usd(emulator.state)
    estimated = sum(e.estimated_usd for e in pricing.ledger.entries() if not e.cached)
    print(f"\n{len(rows)} runs, {len(pricing.ledger.entries())} fal requests: estimated "
          f"${estimated:.4f}; ledger billed ${ledger_billed:.4f}; the emulator billed "
          f"${emulator_bill:.4f}; equal to the cent: "
          f"{'yes' if round(ledger_billed, 2) == round(emulator_bill, 2) else 'NO'} "
          f"(difference ${abs(ledger_billed - emulator_bill):.6f})")
    print(f"today's spend file: ${server_settings.spent_today():.4f} (counts the bill)")
    print("\nThe ledger (the fal Spend node's table):")
    for line in pricing.ledger.report().splitlines():
        print("  " + line)
    return 0 if round(ledger_billed, 2) == round(emulator_bill, 2) else 1


if __name__ == "__main__":
    sys.exit(main())
