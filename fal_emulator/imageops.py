"""Deterministic stand-ins for the fal models: one function per endpoint.

Each op has the signature ``op(images, params, seed) -> PIL.Image`` (RGB),
where ``images`` are the decoded inputs in payload order and ``params`` are the
validated inputs with defaults applied. The work is real (pixels change in a
way related to the endpoint's purpose) and depends only on the inputs and the
seed, so tests can assert on both "something happened" and reproducibility.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

# ----- helpers ------------------------------------------------------------


def _digest(*parts) -> bytes:
    """Stable bytes derived from prompt/seed etc. (Python's hash() is salted)."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()


def _colour(d: bytes, offset: int = 0) -> np.ndarray:
    return np.frombuffer(d[offset:offset + 3], dtype=np.uint8).astype(np.float32)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def _img(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def _blur(arr: np.ndarray, radius: float) -> np.ndarray:
    return _arr(_img(arr).filter(ImageFilter.GaussianBlur(radius)))


def parse_ratio(ratio: str) -> float:
    w, h = ratio.split(":")
    return int(w) / int(h)


def reframe(img: Image.Image, ratio: str | None, mode: str = "crop",
            fill: tuple = (0, 0, 0)) -> Image.Image:
    """Centre-crop (or pad with ``fill``) ``img`` to the aspect ratio."""
    if not ratio:
        return img
    target = parse_ratio(ratio)
    w, h = img.size
    if abs(w / h - target) < 1e-3:
        return img
    if mode == "crop":
        if w / h > target:
            nw = max(1, round(h * target))
            left = (w - nw) // 2
            return img.crop((left, 0, left + nw, h))
        nh = max(1, round(w / target))
        top = (h - nh) // 2
        return img.crop((0, top, w, top + nh))
    if w / h > target:
        size = (w, max(1, round(w / target)))
    else:
        size = (max(1, round(h * target)), h)
    canvas = Image.new("RGB", size, fill)
    canvas.paste(img, ((size[0] - w) // 2, (size[1] - h) // 2))
    return canvas


def prompt_transform(img: Image.Image, prompt: str, seed: int, amount: float) -> Image.Image:
    """Blend towards a prompt+seed derived hue rotation and tint.

    Stands in for "the model edited the image as asked": different prompts or
    seeds give visibly different results, ``amount`` (strength/guidance)
    controls how far the output departs from the input.
    """
    d = _digest("edit", prompt, seed)
    theta = d[0] / 255 * 2 * math.pi
    tint = 0.7 + 0.6 * _colour(d, 1) / 255
    # Rodrigues rotation about the grey axis: rotates hue, keeps luminance-ish.
    k = np.ones(3) / math.sqrt(3)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx
    arr = _arr(img)
    edited = (arr @ rot.T.astype(np.float32)) * tint
    amount = float(min(max(amount, 0.0), 1.0))
    return _img((1 - amount) * arr + amount * edited)


# ----- image-editing group -----------------------------------------------


def background_change(images, p, seed) -> Image.Image:
    """Pixels close to the median border colour are background; repaint them
    with a vertical gradient whose colours come from the prompt and seed."""
    arr = _arr(images[0])
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    ref = np.median(border, axis=0)
    dist = np.linalg.norm(arr - ref, axis=2)
    mask = np.clip((72.0 - dist) / 32.0, 0, 1)            # soft edge around threshold
    mask = np.asarray(Image.fromarray((mask * 255).astype(np.uint8))
                      .filter(ImageFilter.GaussianBlur(1.5)), np.float32)[..., None] / 255
    d = _digest("background", p.get("prompt"), seed)
    top, bottom = _colour(d, 0), _colour(d, 3)
    t = np.linspace(0, 1, arr.shape[0], dtype=np.float32)[:, None, None]
    gradient = (1 - t) * top + t * bottom
    out = _img(mask * gradient + (1 - mask) * arr)
    return reframe(out, p.get("aspect_ratio"))


def face_enhancement(images, p, seed) -> Image.Image:
    """Skin-style smoothing, then contrast and detail boost; guidance_scale
    sets how strong the smoothing is."""
    img = images[0].convert("RGB")
    amount = min(max(p["guidance_scale"] / 7.0, 0.2), 1.0)
    smooth = Image.blend(img, img.filter(ImageFilter.MedianFilter(3))
                         .filter(ImageFilter.SMOOTH_MORE), amount * 0.7)
    out = ImageEnhance.Contrast(smooth).enhance(1.0 + 0.2 * amount)
    out = ImageEnhance.Sharpness(out).enhance(1.3)
    return reframe(out, p.get("aspect_ratio"))


def color_correction(images, p, seed) -> Image.Image:
    """Gray-world white balance followed by a 1% autocontrast stretch."""
    arr = _arr(images[0])
    means = arr.reshape(-1, 3).mean(axis=0)
    arr = arr * (means.mean() / np.maximum(means, 1e-3))
    out = ImageOps.autocontrast(_img(arr), cutoff=1)
    return reframe(out, p.get("aspect_ratio"))


def _removal_box(w: int, h: int, prompt: str, seed: int) -> tuple[int, int, int, int]:
    """A deterministic 20-35% box inside the frame (we have no detector)."""
    d = _digest("remove", prompt, seed)
    bw = max(1, int(w * (0.20 + 0.15 * d[0] / 255)))
    bh = max(1, int(h * (0.20 + 0.15 * d[1] / 255)))
    x0 = 1 + int((w - bw - 2) * d[2] / 255) if w > bw + 2 else 0
    y0 = 1 + int((h - bh - 2) * d[3] / 255) if h > bh + 2 else 0
    return x0, y0, min(w, x0 + bw), min(h, y0 + bh)


def object_removal(images, p, seed) -> Image.Image:
    """Inpaint a box by interpolating from its four surrounding edges
    (inverse-distance blend of the rows/columns just outside), then blur the
    patch so it reads as a smooth fill."""
    arr = _arr(images[0])
    h, w = arr.shape[:2]
    x0, y0, x1, y1 = _removal_box(w, h, p.get("prompt"), seed)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return reframe(_img(arr), p.get("aspect_ratio"))
    top = arr[max(y0 - 1, 0), x0:x1]
    bottom = arr[min(y1, h - 1), x0:x1]
    left = arr[y0:y1, max(x0 - 1, 0)]
    right = arr[y0:y1, min(x1, w - 1)]
    ys = np.arange(y1 - y0, dtype=np.float32)[:, None, None] + 1
    xs = np.arange(x1 - x0, dtype=np.float32)[None, :, None] + 1
    dt, db = ys, (y1 - y0 + 1) - ys
    dl, dr = xs, (x1 - x0 + 1) - xs
    wt, wb, wl, wr = 1 / dt, 1 / db, 1 / dl, 1 / dr
    fill = (wt * top[None] + wb * bottom[None] + wl * left[:, None] + wr * right[:, None])
    fill /= (wt + wb + wl + wr)
    out = arr.copy()
    out[y0:y1, x0:x1] = fill
    patch = _blur(out[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2], 2)
    out[y0:y1, x0:x1] = patch[y0 - max(y0 - 2, 0):, x0 - max(x0 - 2, 0):][:y1 - y0, :x1 - x0]
    return reframe(_img(out), p.get("aspect_ratio"))


# ----- post-processing ----------------------------------------------------


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Neighbour view with edge replication (for 3x3 stencils)."""
    padded = np.pad(a, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = a.shape[:2]
    return padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def _contrast_adaptive_sharpen(arr: np.ndarray, amount: float) -> np.ndarray:
    """AMD FidelityFX CAS on the cross neighbourhood: the sharpening weight
    shrinks where local contrast is already high, avoiding halos."""
    c = arr / 255.0
    n, s, e, w = _shift(c, -1, 0), _shift(c, 1, 0), _shift(c, 0, 1), _shift(c, 0, -1)
    mn = np.minimum.reduce([c, n, s, e, w])
    mx = np.maximum.reduce([c, n, s, e, w])
    amp = np.sqrt(np.clip(np.minimum(mn, 1 - mx) / np.maximum(mx, 1e-5), 0, 1))
    peak = -1.0 / (8.0 - 3.0 * amount)                     # lerp(8, 5, amount)
    wgt = amp * peak
    out = (c + wgt * (n + s + e + w)) / (1 + 4 * wgt)
    return out * 255.0


def sharpen(images, p, seed) -> Image.Image:
    arr = _arr(images[0])
    mode = p["sharpen_mode"]
    if mode == "basic":
        # Classic unsharp mask: add back alpha x (image - blurred).
        out = arr + p["sharpen_alpha"] * (arr - _blur(arr, p["sharpen_radius"]))
    elif mode == "smart":
        # Edge-aware: denoise flat areas (3x3 median to kill speckle, then a
        # blur scaled by noise_radius; a wide median would be far slower),
        # keep the original on edges (weighted by preserve_edges), then
        # sharpen mostly on edges so noise is not amplified.
        denoised = _arr(_img(arr).filter(ImageFilter.MedianFilter(3))
                        .filter(ImageFilter.GaussianBlur(p["noise_radius"] / 3.5)))
        gy, gx = np.gradient(arr.mean(axis=2))
        edges = np.hypot(gx, gy)
        edges = (edges / max(float(edges.max()), 1e-6))[..., None]
        keep = np.clip(edges * p["preserve_edges"] * 4, 0, 1)
        base = keep * arr + (1 - keep) * denoised
        detail = arr - _blur(arr, p["sharpen_radius"])
        gain = p["smart_sharpen_strength"] * p["smart_sharpen_ratio"]
        out = base + gain * detail * np.clip(edges * 4, 0, 1)
    else:
        out = _contrast_adaptive_sharpen(arr, p["cas_amount"])
    return _img(out)


# ----- generative stand-ins ----------------------------------------------


def flux_image_to_image(images, p, seed) -> Image.Image:
    return prompt_transform(images[0], p["prompt"], seed, p["strength"])


def seededit(images, p, seed) -> Image.Image:
    return prompt_transform(images[0], p["prompt"], seed, 0.3 + 0.7 * p["guidance_scale"])


def kontext_multi(images, p, seed) -> Image.Image:
    """Place all references side by side (scaled to the first one's height),
    in payload order, then apply the prompt edit."""
    height = images[0].height
    scaled = [im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height))
              for im in images]
    canvas = Image.new("RGB", (sum(im.width for im in scaled), height))
    x = 0
    for im in scaled:
        canvas.paste(im, (x, 0))
        x += im.width
    canvas = reframe(canvas, p.get("aspect_ratio"))
    return prompt_transform(canvas, p["prompt"], seed, min(p["guidance_scale"] / 10, 1))


def luma_modify(images, p, seed) -> Image.Image:
    """Reframe to the requested ratio by padding (outpaint-like, edge-mean
    fill), then apply the prompt edit with the given strength."""
    img = images[0].convert("RGB")
    arr = _arr(img)
    edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).mean(axis=0)
    framed = reframe(img, p["aspect_ratio"], mode="pad", fill=tuple(int(v) for v in edge))
    return prompt_transform(framed, p["prompt"], seed, p["strength"])


def _nearest_palette(arr: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Nearest palette colour per pixel, in row blocks to bound memory."""
    out = np.empty_like(arr)
    for y in range(0, arr.shape[0], 128):
        block = arr[y:y + 128]
        dist = ((block[:, :, None, :] - palette[None, None]) ** 2).sum(axis=3)
        out[y:y + 128] = palette[dist.argmin(axis=2)]
    return out


_RECRAFT_PALETTE_SIZE = {"vector_illustration": 6, "digital_illustration": 12}


def recraft_posterize(images, p, seed) -> Image.Image:
    """Posterize: map each pixel to the nearest colour of the requested
    palette (or an adaptive palette sized by style), blended by strength."""
    img = images[0].convert("RGB")
    arr = _arr(img)
    if p["colors"]:
        palette = np.array([[c.get("r", 0), c.get("g", 0), c.get("b", 0)] for c in p["colors"]],
                           np.float32)
        mapped = _nearest_palette(arr, palette)
    else:
        root = (p["style"] or "any").split("/")[0]
        n = _RECRAFT_PALETTE_SIZE.get(root, 24)
        mapped = _arr(img.quantize(colors=n, method=Image.Quantize.MEDIANCUT).convert("RGB"))
    s = p["strength"]
    return _img((1 - s) * arr + s * mapped)


# ----- every other catalogue endpoint ------------------------------------------
# One op per kind of job, picked from the endpoint's id and image fields. ``images`` is
# the decoded inputs in payload order, the masks (fields named *mask*) last; ``masks``
# says how many of them are masks.

CUTOUT_IDS = ("birefnet", "background/remove", "remove-background", "rembg", "ben/v2",
              "background-removal", "bria/background/remove")
UPSCALE_IDS = ("upscale", "esrgan", "swin2sr", "aura-sr", "clarity", "seedvr")


def op_kind(endpoint_id: str, has_mask_field: bool) -> str:
    if any(part in endpoint_id for part in CUTOUT_IDS):
        return "cutout"
    if any(part in endpoint_id for part in UPSCALE_IDS):
        return "upscale"
    if has_mask_field:
        return "inpaint"
    return "edit"


def cutout_matte(width: int, height: int) -> np.ndarray:
    """The 'subject' of a background-removal stand-in: a centred ellipse, opaque inside."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    inside = ((x + 0.5 - width / 2) / (width * 0.4)) ** 2 + ((y + 0.5 - height / 2) / (height * 0.4)) ** 2
    return np.where(inside <= 1.0, 255, 0).astype(np.uint8)


def catalogue_op(kind: str):
    def run(images, p, seed, masks: int = 0) -> Image.Image:
        pictures, mask_images = images[:len(images) - masks], images[len(images) - masks:]
        if not images:   # every image field is optional and none was sent: draw from the prompt
            d = _digest("generate", p.get("prompt"), seed)
            y = np.linspace(0, 1, 64, dtype=np.float32)[:, None, None]
            return _img(_colour(d) * (1 - y) + _colour(d, 3) * y + np.zeros((64, 64, 3), np.float32))
        base = pictures[0] if pictures else mask_images[0]
        prompt = str(p.get("prompt") or "")
        if kind == "cutout":
            rgba = base.convert("RGBA")
            rgba.putalpha(Image.fromarray(cutout_matte(*base.size), "L"))
            return rgba
        if kind == "upscale":
            factor = p.get("upscale_factor") or p.get("scale") or 2
            factor = max(1.0, min(float(factor), 4.0))
            size = (min(2048, round(base.width * factor)), min(2048, round(base.height * factor)))
            return base.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        if len(pictures) > 1:   # several references: their average, each scaled to the first
            stack = [_arr(im.convert("RGB").resize(base.size)) for im in pictures]
            base = _img(sum(stack) / len(stack))
        edited = prompt_transform(base.convert("RGB"), prompt, seed, 0.6)
        if kind == "inpaint" and mask_images:
            # Only the white part of the mask changes, as fal's inpainting endpoints do.
            mask = mask_images[0].convert("L").resize(base.size)
            return Image.composite(edited, base.convert("RGB"), mask.point(lambda v: 255 if v > 127 else 0))
        return edited
    run.__name__ = f"catalogue_{kind}"
    return run
