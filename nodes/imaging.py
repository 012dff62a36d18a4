"""Pixels in and out: ComfyUI IMAGE tensors <-> encoded files, hashes, resizing."""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from .spec import ImageLimits, InputProblem

# PNG level 1 is ~5x faster than Pillow's default level 6 and only ~10% larger;
# upload time on a normal line is far smaller than the encode time we save.
PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 95


@dataclass
class PreparedImage:
    """One input frame, ready to upload: 8-bit RGB pixels and their identity."""

    pixels: np.ndarray        # H x W x 3 uint8, C-contiguous
    digest: str               # hash of the pixels; equal pixels -> equal digest
    downscaled_from: tuple[int, int] | None = None   # (w, h) before fitting the limits

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def pixel_digest(pixels: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=20)
    h.update(repr(pixels.shape).encode())
    h.update(memoryview(np.ascontiguousarray(pixels)).cast("B"))
    return h.hexdigest()


def frames_to_uint8(images: torch.Tensor, where: str) -> np.ndarray:
    """[B,H,W,C] float 0..1 -> [B,H,W,3] uint8, rejecting what cannot be an image.

    Values slightly outside 0..1 (common after resampling) are clipped, as
    ComfyUI's own save path does; NaN or infinity is an error, not a silent black.
    """
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
    frames = images.detach().to("cpu", torch.float32)
    if not torch.isfinite(frames).all():
        raise InputProblem(f"`{where}` contains NaN or infinite pixel values; fix the node that "
                           f"produced it")
    # Drop alpha (IMAGE carries colour only; masks travel separately), grey -> RGB.
    if channels in (2, 4):
        frames = frames[..., : channels - 1]
    if frames.shape[-1] == 1:
        frames = frames.expand(*frames.shape[:-1], 3)
    return frames.mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).contiguous().numpy()


def prepare(frame: np.ndarray, limits: ImageLimits) -> PreparedImage:
    """Fit one frame into an endpoint's limits (aspect ratio kept) and hash it."""
    h, w = frame.shape[:2]
    scale = 1.0
    if limits.max_side and max(w, h) > limits.max_side:
        scale = min(scale, limits.max_side / max(w, h))
    if limits.max_pixels and w * h > limits.max_pixels:
        scale = min(scale, (limits.max_pixels / (w * h)) ** 0.5)
    original = None
    if scale < 1.0:
        original = (w, h)
        new = (max(1, int(w * scale)), max(1, int(h * scale)))
        frame = np.asarray(Image.fromarray(frame).resize(new, Image.LANCZOS))
    return PreparedImage(np.ascontiguousarray(frame), pixel_digest(frame), original)


def encode(image: PreparedImage, fmt: str, max_bytes: int | None = None) -> tuple[bytes, str]:
    """Encode for upload; PNG is lossless, JPEG is smaller. Shrinks to fit max_bytes."""
    pil = Image.fromarray(image.pixels)
    while True:
        buf = io.BytesIO()
        if fmt == "jpeg":
            pil.save(buf, "JPEG", quality=JPEG_QUALITY)
            mime = "image/jpeg"
        else:
            pil.save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL)
            mime = "image/png"
        data = buf.getvalue()
        if not max_bytes or len(data) <= max_bytes:
            return data, mime
        # Too big for the endpoint: shrink by the byte ratio (plus a margin) and retry.
        factor = max(0.5, min(0.95, (max_bytes / len(data)) ** 0.5 * 0.95))
        pil = pil.resize((max(1, int(pil.width * factor)), max(1, int(pil.height * factor))),
                         Image.LANCZOS)
        if image.downscaled_from is None:
            image.downscaled_from = image.size
        image.pixels = np.asarray(pil)
        image.digest = pixel_digest(image.pixels)


def decode(data: bytes) -> np.ndarray:
    """Any image file -> H x W x 3 uint8 RGB (alpha dropped, as ComfyUI's loaders do)."""
    with Image.open(io.BytesIO(data)) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode == "I":           # 16-bit PNG: same scaling as ComfyUI's LoadImage
            img = img.point(lambda v: v * (1 / 255))
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        rgb = img.convert("RGB")
        return np.asarray(rgb).copy()


def decode_data_uri(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    if ";base64" in header:
        return base64.b64decode(payload)
    from urllib.parse import unquote_to_bytes
    return unquote_to_bytes(payload)


def to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """Equal-sized uint8 frames -> [B,H,W,3] float32 0..1."""
    batch = np.stack(frames)
    return torch.from_numpy(batch).to(torch.float32).div_(255.0)


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
