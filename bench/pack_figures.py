"""Prints the pack's import time (fresh interpreters, torch already imported so only the
pack counts) and the size of its node definitions as ComfyUI's /object_info would send them.

    .venv/bin/python bench/pack_figures.py [--root PATH_TO_A_CHECKOUT] [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
sys.path.insert(0, ROOT)
import torch, numpy, PIL.Image  # ComfyUI has these loaded before any pack
from tools.pack_loader import load_pack
t0 = time.perf_counter()
pack = load_pack()
elapsed = time.perf_counter() - t0
info = {}
for name, cls in pack.NODE_CLASS_MAPPINGS.items():
    info[name] = {"input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES),
                  "output_name": list(getattr(cls, "RETURN_NAMES", ())),
                  "name": name, "display_name": pack.NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
                  "description": getattr(cls, "DESCRIPTION", ""), "category": cls.CATEGORY,
                  "output_tooltips": list(getattr(cls, "OUTPUT_TOOLTIPS", ()))}
print(json.dumps({"import_s": elapsed, "object_info_bytes": len(json.dumps(info)),
                  "nodes": len(info)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    runs = [json.loads(subprocess.run(
        [sys.executable, "-c", f"ROOT = {args.root!r}\n" + CHILD], capture_output=True,
        text=True, check=True, cwd=args.root).stdout) for _ in range(args.runs)]
    times = [r["import_s"] * 1000 for r in runs]
    print(f"{args.root}: {runs[0]['nodes']} nodes, object_info {runs[0]['object_info_bytes']:,} "
          f"bytes, import {statistics.median(times):.1f} ms median "
          f"(min {min(times):.1f}, {args.runs} fresh interpreters, torch excluded)")


if __name__ == "__main__":
    main()
