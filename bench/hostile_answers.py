"""Peak memory of one node run against answers that were tampered with (issue 14, finding 7;
issue 21).

Each case runs a FLUX.1 [dev] image-to-image node (a 1024x1024 input, num_images 1)
in its own process against an emulator in another process whose result JSON is
rewritten, and prints the node process's peak RSS and how the run ended:

  normal      the emulator's own answer (the baseline)
  200 files   the same result file listed 200 times for num_images 1
  1 GiB body  a result "image" of 1 GiB
  12000^2 PNG a real 12000 x 12000 PNG (a few hundred KB on the wire)
  EPS file    a result file that is PostScript (Pillow would start Ghostscript on it)
  brotli bomb a result file of ~2 KB sent as Content-Encoding: br, 2 GiB unpacked
  zstd bomb   the same as Content-Encoding: zstd (~64 KB)
  JSON bomb   a result JSON of ~100 KB gzip unpacking to 100 MiB of `{},{},...`
  4x10000^2   num_images 4, each a real 10000 x 10000 PNG (~300 KB each)
  PNG result  fal Image Endpoint on fal-ai/birefnet (a PNG with alpha): SVG's baseline
  SVG result  fal Image Endpoint on fal-ai/image2svg: the emulator answers with SVG

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
CASES = ("normal", "200 files", "1 GiB body", "12000^2 PNG", "EPS file", "brotli bomb",
         "zstd bomb", "JSON bomb", "4x10000^2", "PNG result", "SVG result")
BOMB_BYTES = 2 << 30
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n0 0 moveto 64 64 lineto stroke\n" \
    b"showpage\n"


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


def packed_zeros(encoding: str, size: int) -> bytes:
    """`size` zero bytes packed as `encoding`, a MiB at a time (never all in memory)."""
    block = b"\0" * (1 << 20)
    if encoding == "br":
        import brotli
        packer = brotli.Compressor(quality=5)
        return b"".join(packer.process(block) for _ in range(size >> 20)) + packer.finish()
    import zstandard
    packer = zstandard.ZstdCompressor(level=3).compressobj()
    return b"".join(packer.compress(block) for _ in range(size >> 20)) + packer.flush()


def json_bomb() -> bytes:
    import gzip
    return gzip.compress(b'{"images": [], "x": [' + b"{}," * (35 << 20) + b"{}]}", 9)


def serve(case: str) -> None:
    """The tampering emulator: prints its base URL, serves until stdin closes."""
    sys.path.insert(0, str(ROOT))
    from fal_emulator import FalEmulator
    from fal_emulator.server import EmulatorServer, FileStore

    original = EmulatorServer._result_response
    extra: dict = {}

    def tampered(self, job):
        if job.result is not None and "images" in job.result and \
                not getattr(job, "tampered", False):
            result, first = dict(job.result), job.result["images"][0]
            if case == "200 files":
                result["images"] = [first] * 200
            elif case == "4x10000^2":
                result["images"] = [{**first, "url": extra["url"]}] * len(result["images"])
            elif "url" in extra:
                result["images"] = [{**first, "url": extra["url"]}]
            job.result, job.tampered = result, True
        return original(self, job)

    from aiohttp import web
    packed: dict[str, tuple[bytes, str]] = {}     # file id -> (body, Content-Encoding)
    answer_file = EmulatorServer._enter

    async def enter(self, request, kind, *args, **kwargs):
        file_id = request.match_info.get("file_id")
        if kind == "file" and file_id in packed:
            body, encoding = packed[file_id]
            return web.Response(body=body, headers={"Content-Encoding": encoding,
                                                    "Content-Type": "image/png"})
        return await answer_file(self, request, kind, *args, **kwargs)

    def bomb_answer(self, job):
        if job.status != "COMPLETED" or job.error is not None:
            return original(self, job)
        return web.Response(body=extra["json"], headers={"Content-Encoding": "gzip",
                                                         "Content-Type": "application/json"})

    if case == "JSON bomb":
        extra["json"] = json_bomb()
        EmulatorServer._result_response = bomb_answer
    else:
        EmulatorServer._result_response = tampered
    EmulatorServer._enter = enter
    with FalEmulator() as emulator:
        data = None
        if case == "1 GiB body":
            data, kind = b"\0" * (1 << 30), "image/png"
        elif case in ("12000^2 PNG", "4x10000^2"):
            data, kind = big_png(12000 if case == "12000^2 PNG" else 10000), "image/png"
        elif case == "EPS file":
            data, kind = EPS, "image/png"
        elif case in ("brotli bomb", "zstd bomb"):
            data, kind = b"placeholder", "image/png"
        if data is not None:
            file_id = emulator.server.files.put(data, kind, "r.png")
            extra["url"] = FileStore.url(emulator.base_url, file_id, "r.png")
            del data
            if case in ("brotli bomb", "zstd bomb"):
                encoding = "br" if case == "brotli bomb" else "zstd"
                packed[file_id] = (packed_zeros(encoding, BOMB_BYTES), encoding)
        print(emulator.base_url, flush=True)
        sys.stdin.read()


def run(pack: str, case: str) -> None:
    """One node run; prints how it ended."""
    sys.path.insert(0, pack)
    sys.path.insert(0, str(Path(pack) / "tests"))
    import torch
    from conftest import run_node
    image = torch.rand(1, 1024, 1024, 3)
    try:
        if case in ("PNG result", "SVG result"):
            endpoint = "fal-ai/image2svg" if case == "SVG result" else "fal-ai/birefnet"
            images, *_ = run_node("FalImageEndpoint", endpoint=endpoint, image=image,
                                  arguments="{}")
        else:
            images, *_ = run_node("FalFluxDevImageToImage", image=image, prompt="a duck",
                                  num_images=4 if case == "4x10000^2" else 1)
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
        child = subprocess.Popen([sys.executable, __file__, "--run", case, "--pack", pack],
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
    parser.add_argument("--run")
    parser.add_argument("--only", action="append", help="run only this case (repeatable)")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.run:
        return run(args.pack, args.run)
    print(f"pack: {args.pack}")
    for case in args.only or CASES:
        peak, outcome = measure(case, args.pack)
        print(f"{case:12} peak RSS {peak:7.0f} MB   {outcome}")


if __name__ == "__main__":
    main()
