"""SVG results -> pixels, with a renderer that loads nothing and runs nothing.

Several fal endpoints answer with SVG (fal-ai/image2svg, fal-ai/star-vector,
fal-ai/recraft/vectorize, fal-ai/vecglypher/image-to-svg, Recraft V3's vector styles).
They are drawn with resvg (the `resvg-py` wheels): it runs no script and fetches
nothing over the network, but it does read an `<image href="/any/local/path">` from
disk. So the file is first rewritten, streaming through expat without building a tree:

- every `href` that is not a reference inside the file (`#id`) is left out: an image
  linked from disk or the web, or inlined as a data URI (which resvg would decode with
  no size check), is not drawn;
- entity declarations are refused (no entity expansion at all), comments and
  processing instructions (`<?xml-stylesheet?>`) are dropped;
- more than MAX_SVG_ELEMENTS elements or MAX_SVG_BYTES bytes are refused before any
  tree is built.

The picture is drawn at the size the SVG states (width/height in px, pt, mm, cm, in,
or its viewBox), scaled down to fit the pixel cap if it states more. The SVG itself is
not changed for the user: its URL stays in `urls`.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

import numpy as np

MAX_SVG_BYTES = 16 << 20        # fal's vectorisations are a few MB at most
MAX_SVG_ELEMENTS = 200_000      # each costs resvg a node; 200k paths draw in seconds
DEFAULT_SIZE = 100.0            # what a browser (and resvg) use when nothing is stated

# CSS absolute units in px, at the 96 dpi SVG assumes.
_UNITS = {"": 1.0, "px": 1.0, "pt": 96 / 72, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54,
          "in": 96.0}
_LENGTH = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-zA-Z%]*)\s*$")


class SvgRefused(ValueError):
    """An SVG result the pack will not draw; str() says why, in the user's words, and
    `fix` what the user can do about it."""

    def __init__(self, why: str, fix: str = "run again, and check base_url if it persists"):
        super().__init__(why)
        self.fix = fix


def looks_like_svg(data: bytes) -> bool:
    """True for a file that starts as XML and has an <svg element near its top."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<") and b"<svg" in data[:65536]


def _local(name: str) -> str:
    return name.rsplit(":", 1)[-1]


class _Cleaner:
    """One pass of expat over the file: the kept markup, the root's size, the count."""

    def __init__(self, max_pixels: int, stop_after_root: bool = False) -> None:
        self.max_pixels = max_pixels
        self.parts: list[str] = []
        self.elements = 0
        self.root: dict[str, str] | None = None
        self.stop_after_root = stop_after_root
        parser = expat.ParserCreate()          # no namespace processing: names as written
        parser.buffer_text = True
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.text
        parser.EntityDeclHandler = self.entity
        parser.StartDoctypeDeclHandler = self.doctype
        # No ExternalEntityRefHandler: expat then reads no external DTD or entity.
        self.parser = parser

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self.elements += 1
        if self.elements > MAX_SVG_ELEMENTS:
            raise SvgRefused(f"an SVG result has more than {MAX_SVG_ELEMENTS:,} elements, "
                             f"more than the pack draws")
        if self.root is None:
            if _local(name) != "svg":
                raise SvgRefused(f"a result file is XML with a <{name[:40]}> root, not SVG")
            self.root = dict(attrs)
            if self.stop_after_root:
                raise _RootRead()
            attrs = {**attrs, **self.size_attributes()}
        kept = "".join(f" {key}={quoteattr(value)}" for key, value in attrs.items()
                       if not (_local(key) == "href" and not value.lstrip().startswith("#")))
        self.parts.append(f"<{name}{kept}>")

    def end(self, name: str) -> None:
        self.parts.append(f"</{name}>")

    def text(self, data: str) -> None:
        self.parts.append(escape(data))

    def entity(self, *_: Any) -> None:
        raise SvgRefused("an SVG result declares XML entities, which the pack does not expand")

    def doctype(self, name: str, sysid: Any, pubid: Any, has_internal_subset: bool) -> None:
        if has_internal_subset:
            raise SvgRefused("an SVG result declares XML entities, which the pack does not "
                             "expand")

    def size(self) -> tuple[float, float]:
        """(width, height) in px as the root states them (see module doc)."""
        root = self.root or {}
        box = _view_box(root.get("viewBox", ""))
        width = _length(root.get("width"), box[0] if box else None)
        height = _length(root.get("height"), box[1] if box else None)
        if width is None and height is None:
            width, height = box if box else (DEFAULT_SIZE, DEFAULT_SIZE)
        elif width is None:
            width = height * box[0] / box[1] if box else DEFAULT_SIZE
        elif height is None:
            height = width * box[1] / box[0] if box else DEFAULT_SIZE
        if not (math.isfinite(width) and math.isfinite(height)) or width <= 0 or height <= 0:
            raise SvgRefused("an SVG result states no usable size")
        return width, height

    def drawn_size(self) -> tuple[int, int]:
        """The stated size in whole pixels, scaled down (aspect kept) to fit max_pixels."""
        width, height = self.size()
        scale = min(1.0, math.sqrt(self.max_pixels / (width * height)))
        return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))

    def size_attributes(self) -> dict[str, str]:
        """The root's size as the whole pixels it is drawn at, so resvg draws exactly the
        size this module computed; without a viewBox, one that keeps the user space (px
        at the stated size) is added, so the drawing scales with it."""
        width, height = self.drawn_size()
        sized = {"width": str(width), "height": str(height)}
        if _view_box((self.root or {}).get("viewBox", "")) is None:
            stated = self.size()
            sized["viewBox"] = f"0 0 {stated[0]:.9g} {stated[1]:.9g}"
        return sized

    def feed(self, data: bytes) -> None:
        if len(data) > MAX_SVG_BYTES:
            raise SvgRefused(f"an SVG result of {len(data) >> 20} MiB is more than the "
                             f"{MAX_SVG_BYTES >> 20} MiB the pack draws")
        try:
            self.parser.Parse(data, True)
        except expat.ExpatError as exc:
            raise SvgRefused(f"an SVG result is not well-formed XML ({exc})") from None
        if self.root is None:
            raise SvgRefused("a result file is XML without an <svg> root")


class _RootRead(Exception):
    pass


def _view_box(value: str) -> tuple[float, float] | None:
    try:
        numbers = [float(v) for v in re.split(r"[\s,]+", value.strip())]
    except ValueError:
        return None
    if len(numbers) != 4 or not all(map(math.isfinite, numbers)) or \
            numbers[2] <= 0 or numbers[3] <= 0:
        return None
    return numbers[2], numbers[3]


def _length(value: str | None, of_box: float | None) -> float | None:
    """A width or height in px; a percentage is of the viewBox; None if not stated."""
    if value is None:
        return None
    found = _LENGTH.match(value)
    if not found:
        return None
    number, unit = float(found.group(1)), found.group(2).lower()
    if unit == "%":
        return of_box * number / 100 if of_box else None
    return number * _UNITS[unit] if unit in _UNITS else None


def stated_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) the SVG will be drawn at: its stated size, fitted within max_pixels.
    Reads only up to the root element."""
    cleaner = _Cleaner(max_pixels, stop_after_root=True)
    try:
        cleaner.feed(data)
    except _RootRead:
        pass
    return cleaner.drawn_size()


def scaled_note(data: bytes, max_pixels: int) -> str | None:
    """A note for the status when the SVG states more pixels than it is drawn at."""
    cleaner = _Cleaner(max_pixels, stop_after_root=True)
    try:
        cleaner.feed(data)
    except _RootRead:
        pass
    (width, height), drawn = cleaner.size(), cleaner.drawn_size()
    if drawn[0] * drawn[1] >= math.floor(width) * math.floor(height):
        return None
    return (f"an SVG result that states {width:.0f}x{height:.0f} was drawn at "
            f"{drawn[0]}x{drawn[1]} to stay within {max_pixels // 1_000_000} MP; its URL "
            f"has the SVG itself")


# resvg is drawn in a child process: a hostile SVG can crash it (a deep <g> or <mask>
# chain overflows its stack, a huge filter region aborts it) or keep it busy for hours
# (feConvolveMatrix, feTurbulence's numOctaves, many large blurs), and in ComfyUI's own
# process that would kill or hang the server. The child has a CPU and a memory limit
# (POSIX) and a wall-clock timeout (everywhere).
RENDER_SECONDS = 60
RENDER_MEMORY = 3 << 30     # a 100 MP drawing is a 400 MB canvas plus a layer or two
_DRAW = """
import sys
try:
    import resource
    resource.setrlimit(resource.RLIMIT_CPU, (int(sys.argv[3]), int(sys.argv[3])))
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[4]), int(sys.argv[4])))
except (ImportError, ValueError, OSError):
    pass
import resvg_py
# width and height again: resvg fits the drawing within them (aspect kept), so even a
# size it read otherwise could not pass the cap.
png = resvg_py.svg_to_bytes(svg_string=sys.stdin.buffer.read().decode(),
                            width=int(sys.argv[1]), height=int(sys.argv[2]))
sys.stdout.buffer.write(bytes(png))
"""


def _draw(markup: str, width: int, height: int) -> bytes:
    """resvg's PNG of `markup`, drawn in a child process within RENDER_SECONDS and
    RENDER_MEMORY; SvgRefused if it fails, crashes or runs out of either."""
    import subprocess
    import sys
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _DRAW, str(width), str(height),
             str(RENDER_SECONDS), str(RENDER_MEMORY)],
            input=markup.encode(), capture_output=True, timeout=RENDER_SECONDS + 5)
    except subprocess.TimeoutExpired:
        raise SvgRefused(f"an SVG result took more than {RENDER_SECONDS} s to draw") from None
    if done.returncode != 0 or not done.stdout:
        lines = [line for line in done.stderr.decode("utf-8", "replace").splitlines()
                 if line.strip() and not line.startswith(("note:", "stack backtrace"))]
        why = f"it crashed, signal {-done.returncode}" if done.returncode < 0 else \
            lines[-1].strip()[:80] if lines else f"exit status {done.returncode}"
        raise SvgRefused(f"resvg could not draw an SVG result within {RENDER_SECONDS} s "
                         f"and {RENDER_MEMORY >> 30} GiB ({why})")
    return done.stdout


def render(data: bytes, max_pixels: int) -> np.ndarray:
    """The SVG drawn as H x W x 4 uint8 RGBA (transparent where it draws nothing)."""
    from PIL import Image
    try:
        import resvg_py
    except ImportError:
        raise SvgRefused("an SVG result needs the resvg-py package, which is not installed",
                         "install it in ComfyUI's Python (pip install resvg-py, or the pack's "
                         "requirements.txt) and run again") from None
    cleaner = _Cleaner(max_pixels)
    cleaner.feed(data)
    width, height = cleaner.drawn_size()
    del resvg_py            # imported here only to say what to install; drawn in a child
    png = _draw("".join(cleaner.parts), width, height)
    with Image.open(io.BytesIO(png), formats=["PNG"]) as drawn:
        return np.array(drawn.convert("RGBA"))
