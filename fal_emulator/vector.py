"""Endpoints that answer with SVG, as fal's do, and a stand-in vectoriser.

fal-ai/image2svg, fal-ai/star-vector, fal-ai/recraft/vectorize and
fal-ai/vecglypher/image-to-svg always answer with an SVG file; Recraft V3 does for its
vector styles (`vector_illustration` and its sub-styles). The stand-in traces the
result image on a coarse grid: one <rect> per run of equal colour in a row, drawn at
the image's size through a viewBox, so the SVG states its size as fal's do.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SVG_ENDPOINTS = ("fal-ai/image2svg", "fal-ai/star-vector", "fal-ai/recraft/vectorize",
                 "fal-ai/vecglypher/image-to-svg")
VECTOR_STYLE = "vector_illustration"     # Recraft's vector styles start with it
SVG_FORMAT = "svg"
GRID = 32                                # cells along the longer side
LEVELS = 6                               # colour levels per channel


def answers_svg(endpoint_id: str, params: dict) -> bool:
    return endpoint_id in SVG_ENDPOINTS or \
        str(params.get("style") or "").startswith(VECTOR_STYLE)


def output_format(endpoint_id: str, params: dict, fmt: str) -> str:
    """The format the emulator answers in: SVG where fal does, else `fmt`."""
    return SVG_FORMAT if answers_svg(endpoint_id, params) else fmt


def svg_file(img: Image.Image) -> tuple[bytes, str, str]:
    """(data, content_type, extension) of the image traced as SVG."""
    width, height = img.size
    scale = GRID / max(width, height)
    cols, rows = max(1, round(width * scale)), max(1, round(height * scale))
    cells = np.asarray(img.convert("RGB").resize((cols, rows), Image.Resampling.BOX))
    step = 255 / (LEVELS - 1)
    cells = (np.round(cells / step) * step).astype(np.uint8)
    shapes = []
    for y in range(rows):
        x = 0
        while x < cols:
            end = x + 1
            while end < cols and (cells[y, end] == cells[y, x]).all():
                end += 1
            r, g, b = (int(v) for v in cells[y, x])
            shapes.append(f'<rect x="{x}" y="{y}" width="{end - x}" height="1" '
                          f'fill="#{r:02x}{g:02x}{b:02x}"/>')
            x = end
    text = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {cols} {rows}" preserveAspectRatio="none" '
            f'shape-rendering="crispEdges">\n' + "\n".join(shapes) + "\n</svg>\n")
    return text.encode(), "image/svg+xml", SVG_FORMAT


def answer_fields(output_fields: tuple, files: list[dict], store) -> dict:
    """Fields fal sends beside an SVG file: vecglypher's `svg_content` (the SVG's text)."""
    if "svg_content" not in output_fields or not files:
        return {}
    url = files[0]["url"]
    if url.startswith("data:"):
        import base64
        data = base64.b64decode(url.split(",", 1)[1])
    else:
        stored = store.get(url.split("/files/", 1)[1].split("/", 1)[0])
        data = stored.data if stored is not None else b""
    return {"svg_content": data.decode("utf-8", "replace")}
