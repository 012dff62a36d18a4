"""Runs every live catalogue endpoint once through the fal Image Endpoint node against the
local emulator (real fal-client), with its required fields and required images, and prints
how many ran and what failed. Too slow for the test suite (about 20 s); run it after
regenerating the catalogue:

    .venv/bin/python bench/catalogue_sweep.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

from conftest import run_node, sample_image  # noqa: E402  (loads the pack)
from catalogue_helpers import sample_value  # noqa: E402

from comfyui_fal_edit.nodes import catalogue, server_settings  # noqa: E402
from fal_emulator import FalEmulator  # noqa: E402


def main() -> None:
    with FalEmulator() as emulator, tempfile.TemporaryDirectory() as cache:
        os.environ.update(COMFYUI_FAL_BASE_URL=emulator.base_url, FAL_KEY="emulator-key-0000",
                          COMFYUI_FAL_CACHE_DIR=cache,
                          COMFYUI_FAL_KEYS_FILE=str(Path(cache) / "keys" / "keys.json"))
        # Stand-in prices for ~450 endpoints: no ceiling of this throwaway server's owner.
        server_settings.update({"max_usd_per_prompt": 0.0, "max_usd_per_day": 0.0})
        failed, ran, t0 = [], 0, time.perf_counter()
        for endpoint_id, entry in catalogue.endpoints().items():
            if entry.get("retired"):
                continue
            arguments = {name: sample_value(f) for name, f in entry["input"].items()
                         if f.get("required") and not f.get("image")}
            sockets = {slot.sockets[0]: (torch.ones((1, 24, 24)) if slot.kind.startswith("mask")
                                         else sample_image(24, 24))
                       for slot in catalogue.endpoint_for(endpoint_id).slots if slot.required}
            try:
                images = run_node("FalImageEndpoint", endpoint=endpoint_id,
                                  arguments=json.dumps(arguments), **sockets)[0]
                assert images.ndim == 4 and images.shape[0] >= 1
                ran += 1
            except Exception as exc:   # reported, not raised: the sweep lists every failure
                failed.append(f"{endpoint_id}: {exc}")
        seconds = time.perf_counter() - t0
    print(f"catalogue sweep: {ran} of {ran + len(failed)} live endpoints ran end to end through "
          f"fal Image Endpoint in {seconds:.1f}s; {len(failed)} failed")
    for line in failed:
        print("  " + line[:300])


if __name__ == "__main__":
    main()
