"""Run all ten fal nodes on the bundled sample images and make a contact sheet.

By default everything runs against the local fal emulator (no key, no network):

    make demo

With a real key, `make demo ARGS=--real` calls fal itself (it costs money: one
request per node, plus a batch of three on Color Correction).

The nodes are called exactly as ComfyUI calls them: the class's FUNCTION,
awaited on a fresh event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.pack_loader import load_pack  # noqa: E402

ASSETS = ROOT / "assets"
THUMB = 256

# Widget values that show each model off; everything else keeps the node defaults.
SHOWCASE = {
    "FalBackgroundChange": {"prompt": "a snowy mountain valley at dawn"},
    "FalObjectRemoval": {"prompt": "the two people in the background"},
    "FalSharpen": {"sharpen_mode": "basic", "sharpen_radius": 2, "sharpen_alpha": 1.5},
    "FalFluxDevImageToImage": {"prompt": "an oil painting of a person on a sunny street",
                               "strength": 0.6, "num_images": 2},
    "FalRecraftV3ImageToImage": {"prompt": "a winter street", "colors": "#1d3557, #e63946, #f1faee"},
    "FalLumaPhotonModify": {"prompt": "make it look like a watercolor painting",
                            "aspect_ratio": "16:9"},
    "FalSeedEditV3": {"prompt": "give the person a bowler hat and make it snow"},
    "FalFluxKontextMaxMulti": {"prompt": "put the little duckling on the person's t-shirt"},
}


def load_image(path: Path) -> torch.Tensor:
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).unsqueeze(0)


def to_pil(frame: torch.Tensor) -> Image.Image:
    return Image.fromarray((frame.clamp(0, 1) * 255).round().to(torch.uint8).numpy())


def thumb(img: Image.Image) -> Image.Image:
    copy = img.copy()
    copy.thumbnail((THUMB, THUMB))
    return copy


def contact_sheet(rows: list[tuple[str, list[Image.Image], list[Image.Image]]], path: Path) -> None:
    """One row per node: its inputs, an arrow, its outputs."""
    label_h, pad = 22, 8
    widest = max(len(i) + len(o) for _, i, o in rows)
    width = pad + widest * (THUMB + pad) + 40
    height = pad + len(rows) * (THUMB + label_h + pad)
    sheet = Image.new("RGB", (width, height), (32, 32, 36))
    draw = ImageDraw.Draw(sheet)
    y = pad
    for title, inputs, outputs in rows:
        draw.text((pad, y + 4), title, fill=(235, 235, 235))
        x = pad
        for img in inputs:
            t = thumb(img)
            sheet.paste(t, (x, y + label_h))
            x += t.width + pad
        draw.text((x + 8, y + label_h + THUMB // 2 - 6), "->", fill=(255, 200, 60))
        x += 40
        for img in outputs:
            t = thumb(img)
            sheet.paste(t, (x, y + label_h))
            x += t.width + pad
        y += THUMB + label_h + pad
    sheet.save(path)


def run(node, **inputs):
    result = getattr(node, node.FUNCTION)(**inputs)
    result = asyncio.run(result) if asyncio.iscoroutine(result) else result
    return result["result"] if isinstance(result, dict) else result   # {"ui", "result"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="store_true",
                        help="call fal itself with the FAL_KEY environment variable (costs money)")
    parser.add_argument("--out", default=str(ROOT / "demo_output"), help="where to write results")
    parser.add_argument("--latency", type=float, default=0.4,
                        help="emulated fal processing time per request, seconds")
    args = parser.parse_args()

    emulator = None
    if args.real:
        if not os.environ.get("FAL_KEY"):
            print("--real needs the FAL_KEY environment variable", file=sys.stderr)
            return 2
        os.environ.pop("COMFYUI_FAL_BASE_URL", None)
        print("Calling fal.ai itself with FAL_KEY (this is billed).")
    else:
        from fal_emulator import FalEmulator
        emulator = FalEmulator().start()
        emulator.state.latency_s = args.latency
        os.environ["COMFYUI_FAL_BASE_URL"] = emulator.base_url
        os.environ["FAL_KEY"] = "demo-key-not-a-real-fal-key"
        print(f"Local fal emulator at {emulator.base_url} (no key, no network, no cost).")

    pack = load_pack()
    from comfyui_fal_edit.nodes.endpoints import ENDPOINTS
    from comfyui_fal_edit.nodes.host import host

    host.status_listener = lambda node_id, text: None  # statuses are printed per node below
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    portrait = load_image(ASSETS / "sample_portrait.png")
    duckling = load_image(ASSETS / "sample_duckling.png")
    rows = []
    failures = 0
    try:
        for endpoint in ENDPOINTS:
            node = pack.NODE_CLASS_MAPPINGS[endpoint.node_name]()
            widgets = SHOWCASE.get(endpoint.node_name, {})
            if endpoint.multi_image_sockets:
                images = {"image_1": portrait, "image_2": duckling}
            else:
                images = {"image": portrait}
            t0 = time.monotonic()
            try:
                result, seed, urls = run(node, **images, **widgets)
            except Exception as exc:  # show every node, even when one fails
                failures += 1
                print(f"  FAILED {endpoint.display_name}: {exc}")
                continue
            elapsed = time.monotonic() - t0
            outputs = [to_pil(f) for f in result]
            for i, img in enumerate(outputs):
                img.save(out / f"{endpoint.node_name}_{i + 1}.png")
            rows.append((f"{endpoint.display_name}  ({endpoint.endpoint_id})",
                         [to_pil(t[0]) for t in images.values()], outputs))
            print(f"  {endpoint.display_name:<34} {len(outputs)} image(s) in {elapsed:.2f}s")

        # One batch: three frames in, three results out, in order, concurrently.
        batch = torch.cat([portrait, portrait.flip(2), portrait * 0.8])
        node = pack.NODE_CLASS_MAPPINGS["FalColorCorrection"]()
        t0 = time.monotonic()
        result, _, _ = run(node, image=batch)
        print(f"  {'fal Color Correction, batch of 3':<34} {result.shape[0]} image(s) in "
              f"{time.monotonic() - t0:.2f}s")
        rows.append(("fal Color Correction, a batch of 3 (one request each, concurrently)",
                     [to_pil(f) for f in batch], [to_pil(f) for f in result]))
    finally:
        if emulator is not None:
            emulator.stop()

    sheet = out / "contact_sheet.png"
    contact_sheet(rows, sheet)
    print(f"\nResults: {out}/\nContact sheet (input -> output per node): {sheet}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
