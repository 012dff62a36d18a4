"""Pixels in and out: ComfyUI IMAGE tensors <-> encoded files, hashes, resizing."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import threading
import warnings
import weakref
import zlib
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps

from .spec import ImageLimits, InputProblem

try:
    # Intel's ISA-L deflate writes the same zlib stream ~5x faster at level 1, and
    # deflate is most of what encoding an upload costs. zlib where it isn't installed.
    from isal import isal_zlib as _deflate
except ImportError:
    _deflate = zlib

# PNG uploads are written by png_bytes() below: deflate level 1 over rows that all
# use PNG's "Average" filter, computed for the whole image at once in numpy. With
# ISA-L that is ~4x faster than Pillow's PNG writer at level 1 (which tries five
# filters on every row; ~2x with plain zlib) for files within a few percent of its
# size; upload time on a normal line is far smaller than what we save.
PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 95


_pixel_pool = None


async def pixel_work(fn, *args):
    """Run CPU-heavy pixel work (convert, hash, encode, decode) off the event loop, on as
    many threads as there are cores. More threads would not finish sooner, and each one
    keeps its own malloc arena of image-sized buffers: a batch of 4 MP frames on the
    default executor's threads held twice the memory."""
    import asyncio
    import os
    from concurrent.futures import ThreadPoolExecutor

    global _pixel_pool
    if _pixel_pool is None:
        _pixel_pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                         thread_name_prefix="fal-pixels")
    return await asyncio.get_running_loop().run_in_executor(_pixel_pool, fn, *args)


# The 8-bit pixels derived to name an image are kept for the upload that usually follows
# (a cache miss), so the frame is not converted twice, up to this much for the whole
# process: a list of 1,000 frames must not hold them all (those past it are derived again).
KEEP_PIXELS_BYTES = 64 << 20
_kept_bytes = 0
_kept_lock = threading.Lock()


def _keep(nbytes: int) -> bool:
    global _kept_bytes
    with _kept_lock:
        if _kept_bytes + nbytes > KEEP_PIXELS_BYTES:
            return False
        _kept_bytes += nbytes
        return True


def _give_back(nbytes: int) -> None:
    global _kept_bytes
    with _kept_lock:
        _kept_bytes -= nbytes


def kept_pixel_bytes() -> int:
    """Bytes of 8-bit pixels held between naming and uploading, process-wide."""
    return _kept_bytes


class PreparedImage:
    """One input frame, ready to upload: 8-bit RGB pixels and their identity.

    An image made by `prepare_frames` derives its pixels from its IMAGE tensor when
    asked. Naming it (`digest`) keeps them for the upload, within a process-wide
    budget (KEEP_PIXELS_BYTES); `release()` lets them go after the upload or when the
    run ends (most images are never uploaded: fal has them already, or the result is
    cached), so a batch's 8-bit copy is never held whole.
    """

    def __init__(self, pixels: np.ndarray | None, digest: str | None,
                 downscaled_from: tuple[int, int] | None = None, *,
                 size: tuple[int, int] | None = None,
                 source: "Callable[[], np.ndarray] | None" = None) -> None:
        self._pixels = pixels
        self._digest = digest
        self.downscaled_from = downscaled_from   # (w, h) before fitting the limits
        self._size = size
        self._source = source                 # derives the pixels again, for release()
        self._kept: weakref.finalize | None = None   # returns the budget, once

    @property
    def digest(self) -> str:
        """Hash of the pixels; equal pixels, equal digest. Derived on first use (CPU work:
        `identify_all` does it for many images at once, on the pixel threads)."""
        if self._digest is None:
            pixels = self._pixels
            if pixels is None:
                pixels = self._derive()
                if _keep(pixels.nbytes):
                    self._pixels = pixels
                    # Given back on release(), or when the image is dropped unreleased.
                    self._kept = weakref.finalize(self, _give_back, pixels.nbytes)
            self._digest = pixel_digest(pixels)
        return self._digest

    @digest.setter
    def digest(self, value: str) -> None:
        self._digest = value

    def _derive(self) -> np.ndarray:
        assert self._source is not None, "released pixels with no way to derive them"
        return self._source()

    @property
    def pixels(self) -> np.ndarray:
        """H x W x 3 uint8, C-contiguous."""
        if self._pixels is None:
            self._pixels = self._derive()
        return self._pixels

    @pixels.setter
    def pixels(self, value: np.ndarray) -> None:
        self._return_budget()
        self._pixels, self._source, self._size = value, None, None   # now the only copy

    def release(self) -> None:
        if self._source is not None:
            self._pixels = None
            self._return_budget()

    def _return_budget(self) -> None:
        if self._kept is not None:
            self._kept()        # a finalize runs once: a second call does nothing
            self._kept = None

    @property
    def size(self) -> tuple[int, int]:
        if self._size is not None:
            return self._size
        return self.pixels.shape[1], self.pixels.shape[0]


def pixel_digest(pixels: np.ndarray) -> str:
    """The pixels' identity (40 hex digits). SHA-256: with the CPU's SHA instructions
    (x86 SHA-NI, ARMv8 crypto; OpenSSL uses them) it hashes ~1.7 GB/s here, twice
    blake2b's speed, and every frame in and out of a run is hashed."""
    h = hashlib.sha256()
    h.update(repr(pixels.shape).encode())
    h.update(memoryview(np.ascontiguousarray(pixels)).cast("B"))
    return h.hexdigest()[:40]


def frames_to_uint8(images: torch.Tensor, where: str) -> np.ndarray:
    """[B,H,W,C] float 0..1 -> [B,H,W,3] uint8, rejecting what cannot be an image.

    Values slightly outside 0..1 (common after resampling) are clipped, as
    ComfyUI's own save path does; NaN or infinity is an error, not a silent black.
    """
    images = _checked_batch(images, where)
    count, height, width = images.shape[:3]
    out = np.empty((count, height, width, 3), dtype=np.uint8)
    scratch = np.empty((height, width, 3), dtype=np.float32)
    for i in range(count):
        _frame_to_uint8(images, i, where, out[i], scratch)
    return out


def prepare_frames(images: torch.Tensor, where: str, limits: ImageLimits) -> list[PreparedImage]:
    """Every frame of an IMAGE batch as an image fitted to `limits`, without touching its
    pixels: its size comes from the tensor's shape, and its pixels (checked for NaN) and
    their digest are derived when first asked for — by `identify_all`, on every pixel
    thread at once (see PreparedImage for how long the pixels are kept)."""
    images = _checked_batch(images, where)
    height, width = images.shape[1:3]
    size = fitted_size(width, height, limits)
    original = (width, height) if size != (width, height) else None
    return [PreparedImage(None, None, original, size=size,
                          source=lambda i=i: _frame_again(images, i, where, limits))
            for i in range(images.shape[0])]


async def identify_all(images: list[PreparedImage]) -> None:
    """Derive every image's digest, one pixel thread per image (converting and hashing a
    frame release the GIL): a batch is named in a fraction of the time one thread takes.
    Raises InputProblem for a frame that cannot be an image (NaN, infinity)."""
    import asyncio

    unique = list({id(img): img for img in images}.values())
    await asyncio.gather(*(pixel_work(lambda img=img: img.digest) for img in unique))


def _frame_again(images: torch.Tensor, i: int, where: str, limits: ImageLimits) -> np.ndarray:
    frame = np.empty((*images.shape[1:3], 3), dtype=np.uint8)
    _frame_to_uint8(images, i, where, frame, None)
    return _fit(frame, limits)[0]


def _checked_batch(images: torch.Tensor, where: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise InputProblem(f"`{where}` is not an IMAGE; connect an IMAGE output")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise InputProblem(f"`{where}` holds no image (shape {tuple(images.shape)}); "
                           f"connect a node that outputs at least one image")
    channels = images.shape[-1]
    if channels not in (1, 2, 3, 4):
        raise InputProblem(f"`{where}` has {channels} channels per pixel; connect an IMAGE "
                           f"with 1 to 4 channels (IMAGE is [batch, height, width, channels])")
    return images


def _frame_to_uint8(images: torch.Tensor, i: int, where: str, out: np.ndarray,
                    scratch: np.ndarray | None) -> None:
    """Frame i of a checked batch -> `out` (H x W x 3 uint8).

    One frame at a time in numpy, through one float scratch frame: torch's
    isfinite/mul/add on a whole batch cost ~55 ms per megapixel here and a
    full float32 copy of the batch; this is ~3 ms/MP and one frame of scratch.
    The arithmetic (x*255 + 0.5, clip, truncate) is the same, bit for bit.
    """
    height, width, channels = images.shape[1:]
    if scratch is None:
        scratch = np.empty((height, width, 3), dtype=np.float32)
    frame = images[i].detach().to("cpu", torch.float32).numpy()  # a view if CPU float32
    if not np.isfinite(frame).all():
        raise InputProblem(f"`{where}` contains NaN or infinite pixel values; fix the node "
                           f"that produced it")
    # Drop alpha (IMAGE carries colour only; masks travel separately), grey -> RGB.
    if channels in (2, 4):
        frame = frame[..., : channels - 1]
    if frame.shape[-1] == 1:
        frame = np.broadcast_to(frame, (height, width, 3))
    np.multiply(frame, np.float32(255.0), out=scratch)
    np.add(scratch, np.float32(0.5), out=scratch)
    np.clip(scratch, 0, 255, out=scratch)
    np.copyto(out, scratch, casting="unsafe")


def prepare(frame: np.ndarray, limits: ImageLimits) -> PreparedImage:
    """Fit one frame into an endpoint's limits (aspect ratio kept) and hash it."""
    fitted, original = _fit(frame, limits)
    return PreparedImage(np.ascontiguousarray(fitted), pixel_digest(fitted), original)


def _fit(frame: np.ndarray, limits: ImageLimits) -> tuple[np.ndarray, tuple[int, int] | None]:
    """The frame scaled down (aspect kept) to fit `limits`, and its size before, if it was."""
    h, w = frame.shape[:2]
    new = fitted_size(w, h, limits)
    if new == (w, h):
        return frame, None
    return np.ascontiguousarray(Image.fromarray(frame).resize(new, Image.LANCZOS)), (w, h)


def fitted_size(w: int, h: int, limits: ImageLimits) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, to fit `limits`; unchanged if it fits."""
    scale = 1.0
    if limits.max_side and max(w, h) > limits.max_side:
        scale = min(scale, limits.max_side / max(w, h))
    if limits.max_pixels and w * h > limits.max_pixels:
        scale = min(scale, (limits.max_pixels / (w * h)) ** 0.5)
    if scale >= 1.0:
        return w, h
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    while (limits.max_side and max(new) > limits.max_side) or \
            (limits.max_pixels and new[0] * new[1] > limits.max_pixels):
        new = (max(1, new[0] - 1), max(1, new[1] - 1))   # rounding overshot a limit
    return new


def encode(image: PreparedImage, fmt: str, max_bytes: int | None = None) -> tuple[bytes, str]:
    """Encode for upload; PNG is lossless, JPEG is smaller. Shrinks to fit max_bytes."""
    pixels = image.pixels
    while True:
        if fmt == "jpeg":
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, "JPEG", quality=JPEG_QUALITY)
            data, mime = buf.getvalue(), "image/jpeg"
        else:
            data, mime = png_bytes(pixels), "image/png"
        if not max_bytes or len(data) <= max_bytes:
            return data, mime
        # Too big for the endpoint: shrink by the byte ratio (plus a margin) and retry.
        factor = max(0.5, min(0.95, (max_bytes / len(data)) ** 0.5 * 0.95))
        height, width = pixels.shape[:2]
        pixels = np.asarray(Image.fromarray(pixels).resize(
            (max(1, int(width * factor)), max(1, int(height * factor))), Image.LANCZOS))
        if image.downscaled_from is None:
            image.downscaled_from = image.size
        image.pixels = pixels
        image.digest = pixel_digest(pixels)


def png_bytes(pixels: np.ndarray) -> bytes:
    """H x W x 3 uint8 -> an 8-bit RGB PNG file.

    Every row uses the "Average" filter: predicted = (left + up) // 2, from the
    raw pixels, so the whole image is filtered in a few vectorised passes (only
    decoding is sequential). Deflate releases the GIL, so batch frames encode in
    parallel on the runtime's worker threads.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width, channels = pixels.shape
    if channels != 3:
        raise ValueError(f"png_bytes takes H x W x 3 pixels, not {pixels.shape}")
    flat = pixels.reshape(height, width * 3)
    # Filter ~1 MB of pixels at a time: small scratch, so batches in flight do not
    # leave image-sized temporaries behind in the allocator's per-thread arenas.
    step = max(1, (1 << 20) // (width * 3))
    predicted = np.empty((min(step, height), width * 3), dtype=np.uint16)
    rows = np.empty((min(step, height), 1 + width * 3), dtype=np.uint8)
    rows[:, 0] = 3                             # filter type 3: Average
    compressor = _deflate.compressobj(PNG_COMPRESS_LEVEL, zlib.DEFLATED, 15, 9)
    parts = []
    for top in range(0, height, step):
        block = flat[top:top + step]
        n = block.shape[0]
        pred = predicted[:n]
        pred[:, :3] = 0                        # no left neighbour for the first pixel
        pred[:, 3:] = block[:, :-3]
        if top:
            pred += flat[top - 1:top - 1 + n]  # the row above
        else:
            pred[1:] += block[:-1]             # the first row has none
        pred >>= 1
        np.subtract(block, pred, out=rows[:n, 1:], casting="unsafe")   # modulo 256
        parts.append(compressor.compress(memoryview(rows[:n]).cast("B")))
    parts.append(compressor.flush())
    idat = b"".join(parts)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(body, zlib.crc32(kind))))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)   # 8-bit RGB, no interlace
    return b"".join((b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header), chunk(b"IDAT", idat),
                     chunk(b"IEND", b"")))


# A result larger than this is refused before its pixels are decoded: a 445 KB PNG can
# claim 12000 x 12000 pixels (2.7 GB decoded). fal's largest outputs are far below it.
MAX_RESULT_PIXELS = 100_000_000
EXIF_ORIENTATION = 0x0112


class TooManyPixels(ValueError):
    """The file's header claims more pixels than MAX_RESULT_PIXELS."""


class UnsupportedFormat(ValueError):
    """A result file in a format the pack does not open; str() names the format."""


# The only formats a result file is opened as, each recognised by its first bytes before
# any decoder runs: given no list, Pillow tries every format it knows, and EPS starts
# Ghostscript on the file's PostScript. (name, Pillow's format, first bytes...)
RESULT_FORMATS = (
    ("PNG", "PNG", b"\x89PNG\r\n\x1a\n"),
    ("JPEG", "JPEG", b"\xff\xd8\xff"),
    ("GIF", "GIF", b"GIF87a", b"GIF89a"),
    ("TIFF", "TIFF", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
)
# Formats recognised only to name them in the refusal.
_OTHER_FORMATS = (
    (b"%!PS", "EPS (PostScript)"), (b"\xc5\xd0\xd3\xc6", "EPS (PostScript)"),
    (b"%PDF", "PDF"), (b"BM", "BMP"), (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL ", "JPEG XL"), (b"qoif", "QOI"),
    (b"DDS ", "DDS"), (b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "ZIP"), (b"{", "JSON"),
    (b"P6", "PPM"), (b"P5", "PGM"), (b"#?RADIANCE", "HDR"), (b"\x76\x2f\x31\x01", "OpenEXR"),
)


def result_format(data: bytes) -> str:
    """'PNG', 'JPEG', 'WEBP', 'GIF', 'TIFF' or 'SVG', from the file's first bytes;
    UnsupportedFormat naming what it is otherwise."""
    from . import svg
    for name, _, *magics in RESULT_FORMATS:
        if data.startswith(tuple(magics)):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if svg.looks_like_svg(data):
        return "SVG"
    raise UnsupportedFormat(format_name(data))


def format_name(data: bytes) -> str:
    """What a file that is none of the result formats is, for the refusal."""
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "AVIF" if brand.startswith(b"avi") else "HEIC" if brand.startswith(b"hei") \
            or brand in (b"mif1", b"msf1") else "MP4/QuickTime"
    if data[:4] == b"RIFF":
        return f"RIFF {data[8:12].decode('latin-1').strip() or '?'}"
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            return name
    head = data[:256].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if head.startswith(b"<"):
        return "XML that is not SVG"
    return f"an unknown format (it starts {data[:8].hex(' ') or 'empty'})"


def _open(data: bytes, fmt: str) -> Image.Image:
    """The file opened lazily (header only) as `fmt` and nothing else."""
    pillow = "WEBP" if fmt == "WEBP" else next(p for n, p, *_ in RESULT_FORMATS if n == fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # checked by callers
        try:
            return Image.open(io.BytesIO(data), formats=[pillow])
        except Image.DecompressionBombError:
            raise TooManyPixels(f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0)}") from None


def stated_size(data: bytes, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) a result file will decode to, from its header (an SVG: the size it
    is drawn at). UnsupportedFormat or TooManyPixels before any pixel is decoded."""
    from . import svg
    max_pixels = max_pixels or MAX_RESULT_PIXELS      # read now: tests lower it
    fmt = result_format(data)
    if fmt == "SVG":
        return svg.stated_size(data, max_pixels)
    with _open(data, fmt) as img:
        width, height = img.size
    if width * height > max_pixels:
        raise TooManyPixels(f"{width}x{height}")
    return width, height


def decode(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """A result file (RESULT_FORMATS, WebP or SVG) -> H x W x 3 uint8 RGB (alpha dropped,
    as ComfyUI's loaders do; GIF and TIFF: the first frame).

    The format is told from the first bytes and the size read from the header before
    decoding: UnsupportedFormat or TooManyPixels before any pixel is decoded."""
    from . import svg
    max_pixels = max_pixels or MAX_RESULT_PIXELS
    fmt = result_format(data)
    if fmt == "SVG":
        return np.ascontiguousarray(svg.render(data, max_pixels)[..., :3])
    with _open(data, fmt) as img:
        width, height = img.size
        if width * height > max_pixels:
            raise TooManyPixels(f"{width}x{height}")
        if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)   # (a copy of the whole image: only if needed)
        if img.mode.startswith("I;16") or img.mode == "I":
            # 16-bit greyscale: map 0..65535 onto 0..255 rather than clip to white.
            wide = np.asarray(img, dtype=np.float32)
            img = Image.fromarray(np.clip(wide / 257.0 + 0.5, 0, 255).astype(np.uint8))
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        return np.array(rgb)      # writable (torch.from_numpy warns about a read-only array)


def decode_alpha(data: bytes, max_pixels: int | None = None) -> np.ndarray | None:
    """A result file's transparency as H x W uint8 (255 opaque), or None when it has none."""
    from . import svg
    max_pixels = max_pixels or MAX_RESULT_PIXELS
    fmt = result_format(data)
    if fmt == "SVG":
        alpha = svg.render(data, max_pixels)[..., 3]
        return None if alpha.min() == 255 else alpha.copy()
    with _open(data, fmt) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info) \
                or (img.mode in ("RGB", "L") and "transparency" in img.info):
            return np.asarray(img.convert("RGBA"))[..., 3].copy()
    return None


def is_black(frame: np.ndarray) -> bool:
    """Every pixel black, as fal returns a result its safety checker flagged (1 of 255
    allowed for a lossy encoder's rounding)."""
    return bool(frame.max(initial=0) <= 1)


def decode_data_uri(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    if ";base64" in header:
        return base64.b64decode(payload)
    from urllib.parse import unquote_to_bytes
    return unquote_to_bytes(payload)


def fit_like_batch_images(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bring a frame to (width, height) as ComfyUI's "Batch Images" node does:
    centre-crop to the target aspect ratio, then bilinear resize."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    target_ratio = width / height
    if w / h > target_ratio:
        new_w = max(1, round(h * target_ratio))
        x0 = (w - new_w) // 2
        frame = frame[:, x0:x0 + new_w]
    elif w / h < target_ratio:
        new_h = max(1, round(w / target_ratio))
        y0 = (h - new_h) // 2
        frame = frame[y0:y0 + new_h]
    t = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).unsqueeze(0).float()
    t = torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear",
                                        align_corners=False, antialias=True)
    return t.squeeze(0).permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def closest_ratio(width: int, height: int, choices: tuple[str, ...]) -> str:
    """The 'w:h' choice nearest (in log space) to the image's own ratio."""
    import math
    own = math.log(width / height)

    def distance(choice: str) -> float:
        a, b = choice.split(":")
        return abs(math.log(float(a) / float(b)) - own)

    return min(choices, key=distance)
