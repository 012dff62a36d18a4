"""SVG results (issue 21): endpoints that answer with SVG work end to end, drawn by a
renderer that loads nothing from outside the file, at the size the SVG states within
the pixel cap, and the SVG itself goes on (its URL in `urls`, its text in result_json)."""

from __future__ import annotations

import json

import pytest

from conftest import run_node, sample_image

from comfyui_fal_edit.nodes import imaging, svg
from comfyui_fal_edit.nodes.errors import FalNodeError
from fal_emulator.server import EmulatorServer, FileStore

pytest.importorskip("resvg_py")

SVG_NS = 'xmlns="http://www.w3.org/2000/svg"'


def drawn(text: str, max_pixels: int | None = None):
    return imaging.decode(text.encode(), max_pixels)


@pytest.mark.parametrize("endpoint", ["fal-ai/image2svg", "fal-ai/recraft/vectorize",
                                      "fal-ai/star-vector"])
def test_an_svg_endpoint_runs_end_to_end(fal, endpoint):
    images, mask, urls, result_json = run_node("FalImageEndpoint", endpoint=endpoint,
                                               image=sample_image(96, 64), arguments="{}")
    assert tuple(images.shape) == (1, 64, 96, 3)            # the size the SVG states
    assert images.std() > 0.05                              # a picture, not a blank
    assert urls.endswith(".svg")
    texts = json.loads(result_json)[0]["svg"]
    assert texts[0].lstrip().startswith("<?xml") and "<svg" in texts[0]
    assert texts[0].encode() == fal.server.files.get(urls.split("/files/")[1].split("/")[0]).data


def test_recraft_vector_styles_answer_svg_and_are_drawn(fal):
    images, _, urls = run_node("FalRecraftV3ImageToImage", image=sample_image(96, 64),
                               prompt="a duck", style="vector_illustration")
    assert urls.endswith(".svg") and tuple(images.shape) == (1, 64, 96, 3)
    _, _, raster = run_node("FalRecraftV3ImageToImage", image=sample_image(96, 64),
                            prompt="a duck", style="digital_illustration")
    assert raster.endswith(".png")


def test_nothing_outside_the_file_is_drawn(tmp_path):
    """resvg itself reads <image href="/any/path"> from disk; such links (and data: URIs,
    which resvg would decode unchecked) are left out before it sees the file."""
    from PIL import Image
    secret = tmp_path / "secret.png"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(secret)
    text = (f'<svg {SVG_NS} xmlns:xlink="http://www.w3.org/1999/xlink" width="40" height="40">'
            f'<rect width="40" height="40" fill="#0000ff"/>'
            f'<image width="40" height="40" xlink:href="{secret}"/>'
            f'<image width="40" height="40" href="file://{secret}"/>'
            f'<image width="40" height="40" href="http://127.0.0.1:9/x.png"/>'
            f'<defs><rect id="dot" width="4" height="4" fill="#00ff00"/></defs>'
            f'<use href="#dot"/></svg>')
    frame = drawn(text)
    assert tuple(frame[20, 20]) == (0, 0, 255)              # no red from the disk
    assert tuple(frame[1, 1]) == (0, 255, 0)                # references inside the file work


@pytest.mark.parametrize("root,size", [
    ('width="200" height="100"', (200, 100)),
    ('viewBox="0 0 300 150"', (300, 150)),
    ('width="2in" viewBox="0 0 10 5"', (192, 96)),
    ('width="10cm" height="5cm"', (377, 188)),
    ('width="100%" height="50%" viewBox="0 0 40 40"', (40, 20)),
    ("", (100, 100)),
])
def test_drawn_at_the_size_the_svg_states(root, size):
    text = f'<svg {SVG_NS} {root}><rect width="100%" height="100%" fill="#fff"/></svg>'
    assert imaging.stated_size(text.encode()) == size
    assert drawn(text).shape[:2] == (size[1], size[0])


def test_a_huge_stated_size_is_drawn_within_the_pixel_cap():
    text = f'<svg {SVG_NS} width="100000" height="50000"><rect width="10" height="10"/></svg>'
    assert imaging.stated_size(text.encode(), 20_000) == (200, 100)
    assert drawn(text, 20_000).shape == (100, 200, 3)


@pytest.mark.parametrize("text,why", [
    (f'<!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa">]><svg {SVG_NS} width="9" height="9">&a;</svg>',
     "declares XML entities"),
    (f'<svg {SVG_NS} width="9" height="9"><rect', "not well-formed XML"),
    (f'<svg {SVG_NS} width="0" height="9"/>', "states no usable size"),
    ("<svg" + "<g>" * 10, "not well-formed XML"),
])
def test_an_svg_that_is_not_drawn_says_why(text, why):
    with pytest.raises(svg.SvgRefused, match=why):
        imaging.decode(text.encode())


def test_too_many_elements_are_refused_before_any_tree_is_built(monkeypatch):
    monkeypatch.setattr(svg, "MAX_SVG_ELEMENTS", 1000)
    text = f'<svg {SVG_NS} width="9" height="9">' + "<g/>" * 2000 + "</svg>"
    with pytest.raises(svg.SvgRefused, match="more than 1,000 elements"):
        imaging.decode(text.encode())


@pytest.mark.parametrize("text", [
    # 50,000 nested groups overflow resvg's stack (SIGSEGV), as does a chain of masks
    f'<svg {SVG_NS} width="9" height="9">' + "<g>" * 50_000 + "</g>" * 50_000 + "</svg>",
    f'<svg {SVG_NS} width="9" height="9">' + "".join(
        f'<mask id="m{i}"><rect width="9" height="9" mask="url(#m{i - 1})"/></mask>'
        for i in range(1, 3000)) + '<rect mask="url(#m2999)" width="9" height="9"/></svg>',
    # a filter region 30 times the canvas each way aborts resvg (a Rust panic)
    f'<svg {SVG_NS} width="10000" height="10000"><filter id="f" x="-1000%" y="-1000%" '
    f'width="3000%" height="3000%"><feGaussianBlur stdDeviation="100000"/></filter>'
    f'<rect filter="url(#f)" width="10000" height="10000"/></svg>',
])
def test_an_svg_that_crashes_resvg_is_refused_and_this_process_lives(text):
    """resvg runs in a child process: drawn in ComfyUI's own, these killed the server."""
    with pytest.raises(svg.SvgRefused, match="resvg could not draw an SVG result"):
        imaging.decode(text.encode())


def test_an_svg_that_keeps_resvg_busy_is_stopped(monkeypatch):
    """feTurbulence with a million octaves runs for hours; the child's time is bounded."""
    monkeypatch.setattr(svg, "RENDER_SECONDS", 2)
    text = (f'<svg {SVG_NS} width="2000" height="2000"><filter id="f"><feTurbulence '
            f'baseFrequency="0.01" numOctaves="1000000"/></filter>'
            f'<rect filter="url(#f)" width="2000" height="2000"/></svg>')
    with pytest.raises(svg.SvgRefused, match="within 2 s|more than 2 s"):
        imaging.decode(text.encode())


def test_a_refused_svg_result_says_so_in_one_sentence(fal, monkeypatch):
    original = EmulatorServer._result_response

    def entity_svg(self, job):
        if job.result is not None and not job.__dict__.get("tampered"):
            data = (f'<!DOCTYPE svg [<!ENTITY a "x">]><svg {SVG_NS} width="9" '
                    f'height="9">&a;</svg>').encode()
            url = FileStore.url(fal.base_url, fal.server.files.put(data, "image/svg+xml",
                                                                   "r.svg"), "r.svg")
            job.result = {**job.result, "images": [{"url": url}]}
            job.tampered = True
        return original(self, job)
    monkeypatch.setattr(EmulatorServer, "_result_response", entity_svg)
    with pytest.raises(FalNodeError) as caught:
        run_node("FalImageEndpoint", endpoint="fal-ai/image2svg", image=sample_image(32, 32),
                 arguments="{}")
    assert "an SVG result declares XML entities, which the pack does not expand, so it was " \
           "not drawn (fal billed this request); run again" in str(caught.value)


def test_vecglypher_answers_its_svg_as_a_file_and_as_text(fal):
    images, _, urls, result_json = run_node(
        "FalImageEndpoint", endpoint="fal-ai/vecglypher/image-to-svg",
        image=sample_image(64, 64), arguments='{"prompt": "Ab"}')
    answer = json.loads(result_json)[0]
    assert urls.endswith(".svg") and images.shape[0] == 1
    assert answer["svg_content"] == answer["svg"][0]


def test_without_resvg_an_svg_result_says_what_to_install(fal, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "resvg_py", None)       # as if not installed
    with pytest.raises(FalNodeError) as caught:
        run_node("FalImageEndpoint", endpoint="fal-ai/image2svg", image=sample_image(32, 32),
                 arguments="{}")
    assert "an SVG result needs the resvg-py package, which is not installed, so it was not " \
           "drawn (fal billed this request); install it in ComfyUI's Python" in str(caught.value)


def test_an_svg_drawn_smaller_than_it_states_says_so(fal, monkeypatch, statuses):
    original = EmulatorServer._result_response

    def huge_svg(self, job):
        if job.result is not None and not job.__dict__.get("tampered"):
            data = f'<svg {SVG_NS} width="20000" height="10000"><rect width="9" height="9"/></svg>'
            url = FileStore.url(fal.base_url, fal.server.files.put(data.encode(),
                                                                   "image/svg+xml", "r.svg"),
                                "r.svg")
            job.result = {**job.result, "images": [{"url": url}]}
            job.tampered = True
        return original(self, job)
    monkeypatch.setattr(EmulatorServer, "_result_response", huge_svg)
    monkeypatch.setattr(imaging, "MAX_RESULT_PIXELS", 2_000_000)    # 100 MP in use
    images, *_ = run_node("FalImageEndpoint", endpoint="fal-ai/image2svg",
                          image=sample_image(32, 32), arguments="{}")
    assert tuple(images.shape) == (1, 1000, 2000, 3)
    assert "an SVG result that states 20000x10000 was drawn at 2000x1000 to stay within " \
           "2 MP" in statuses[-1]
