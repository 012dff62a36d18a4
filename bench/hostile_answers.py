"""Peak memory of one node run against answers that were tampered with (issue 14, finding 7).

Each case runs a FLUX.1 [dev] image-to-image node (a 1024x1024 input, num_images 1)
in its own process against an emulator in another process whose result JSON is
rewritten, and prints the node process's peak RSS and how the run ended:

  normal      the emulator's own answer (the baseline)
  200 files   the same result file listed 200 times for num_images 1
  1 GiB body  a result "image" of 1 GiB
  12000^2 PNG a real 12000 x 12000 PNG (a few hundred KB on the wire)

    .venv/bin/python bench/hostile_answers.py [--pack PATH]

--pack runs another checkout of the pack (e.g. an older commit) for a before/after.
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("normal", "200 files", "1 GiB body", "12000^2 PNG")


def big_png(side: int) -> bytes:
    """A black side x side RGB PNG, written row by row (never side^2 pixels in memory)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))
    deflate = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * side)
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + \
        chunk(b"IEND", b"")


def serve(case: str) -> None:
    """The tampering emulator: prints its base URL, serves until stdin closes."""
    sys.path.insert(0, str(ROOT))
    from fal_emulator import FalEmulator
    from fal_emulator.server import EmulatorServer, FileStore

    original = EmulatorServer._result_response
    extra: dict = {}

    def tampered(self, job):
        if job.result is not None and not getattr(job, "tampered", False):
            result, first = dict(job.result), job.result["images"][0]
            if case == "200 files":
                result["images"] = [first] * 200
            elif case in ("1 GiB body", "12000^2 PNG"):
                result["images"] = [{**first, "url": extra["url"]}]
            job.result, job.tampered = result, True
        return original(self, job)

    EmulatorServer._result_response = tampered
    with FalEmulator() as emulator:
        if case == "1 GiB body":
            data, kind = b"\0" * (1 << 30), "image/png"
        elif case == "12000^2 PNG":
            data, kind = big_png(12000), "image/png"
        if case in ("1 GiB body", "12000^2 PNG"):
            file_id = emulator.server.files.put(data, kind, "r.png")
            extra["url"] = FileStore.url(emulator.base_url, file_id, "r.png")
            del data
        print(emulator.base_url, flush=True)
        sys.stdin.read()


def run(pack: str) -> None:
    """One node run; prints how it ended."""
    sys.path.insert(0, pack)
    sys.path.insert(0, str(Path(pack) / "tests"))
    import torch
    from conftest import run_node
    try:
        images, _, _ = run_node("FalFluxDevImageToImage", image=torch.rand(1, 1024, 1024, 3),
                                prompt="a duck")
        print(f"ok: {tuple(images.shape)}")
    except Exception as exc:   # the figure is the memory; the sentence says why it ended
        print(f"failed: {str(exc)[:150]}")


def measure(case: str, pack: str) -> tuple[float, str]:
    server = subprocess.Popen([sys.executable, __file__, "--serve", case], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        with_env = {**os.environ, "COMFYUI_FAL_BASE_URL": base_url, "FAL_KEY": "bench-key-1234",
                    "COMFYUI_FAL_CACHE_DIR": "", "COMFYUI_FAL_KEYS_FILE":
                    f"/tmp/hostile-answers-{os.getpid()}/keys.json"}
        with_env.pop("COMFYUI_FAL_CACHE_DIR")
        child = subprocess.Popen([sys.executable, __file__, "--run", "--pack", pack],
                                 env=with_env, stdout=subprocess.PIPE, text=True)
        out = child.stdout.read().strip().splitlines()
        _, _, usage = os.wait4(child.pid, 0)
        return usage.ru_maxrss / 1024, (out[-1] if out else "no output")
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pack", default=str(ROOT))
    parser.add_argument("--serve")
    parser.add_argument("--run", action="store_true")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.run:
        return run(args.pack)
    print(f"pack: {args.pack}")
    for case in CASES:
        peak, outcome = measure(case, args.pack)
        print(f"{case:12} peak RSS {peak:7.0f} MB   {outcome}")


if __name__ == "__main__":
    main()
