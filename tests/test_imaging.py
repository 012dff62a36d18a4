"""Pixels in and out: the conversions every upload and download goes through."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_fal_edit.nodes import imaging
from comfyui_fal_edit.nodes.spec import ImageLimits, InputProblem, parse_colors


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 5), (640, 1), (1, 480), (999, 1000)])
def test_png_writer_round_trips_exactly_through_pillow(size):
    width, height = size
    rng = np.random.default_rng(width * 7 + height)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    data = imaging.png_bytes(pixels)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (width, height)
        assert np.array_equal(np.asarray(img), pixels)


def test_png_writer_without_isal_uses_zlib(monkeypatch):
    import zlib
    monkeypatch.setattr(imaging, "_deflate", zlib)
    pixels = np.random.default_rng(3).integers(0, 256, (33, 17, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(imaging.png_bytes(pixels))) as img:
        assert np.array_equal(np.asarray(img), pixels)


def test_uint8_conversion_rounds_clips_and_converts_channels():
    values = torch.tensor([[[[0.0, 0.5, 1.0], [-0.2, 1.3, 0.999]]]])  # [1,1,2,3]
    out = imaging.frames_to_uint8(values, "image")
    assert out.tolist() == [[[[0, 128, 255], [0, 255, 255]]]]
    grey = imaging.frames_to_uint8(torch.full((1, 2, 2, 1), 0.25), "image")
    assert grey.shape == (1, 2, 2, 3) and (grey == 64).all()
    rgba = imaging.frames_to_uint8(torch.rand(2, 3, 3, 4), "image")
    la = imaging.frames_to_uint8(torch.rand(1, 3, 3, 2), "image")
    assert rgba.shape == (2, 3, 3, 3) and la.shape == (1, 3, 3, 3)
    with pytest.raises(InputProblem, match="NaN or infinite"):
        imaging.frames_to_uint8(torch.tensor([[[[0.0, float("inf"), 0.0]]]]), "image")


def test_decoded_result_hashes_like_the_tensor_it_becomes():
    """A fal result fed into the next fal node must be recognised by its pixels."""
    pixels = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    decoded = imaging.decode(imaging.png_bytes(pixels))
    tensor = torch.from_numpy(decoded).float().div(255).unsqueeze(0)
    again = imaging.frames_to_uint8(tensor, "image")[0]
    assert imaging.pixel_digest(again) == imaging.pixel_digest(decoded)


def test_decode_16_bit_grey_scales_instead_of_clipping():
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 8), 40000, dtype=np.uint16)).save(buf, "PNG")
    out = imaging.decode(buf.getvalue())
    assert out.shape == (6, 8, 3) and (out == round(40000 / 257)).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK"])
def test_decode_any_mode_to_rgb(mode):
    img = Image.new("RGB", (8, 6), (200, 100, 50)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG" if mode == "CMYK" else "PNG")
    out = imaging.decode(buf.getvalue())
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("orientation, expected", [(1, (4, 6)), (6, (6, 4)), (3, (4, 6))])
def test_decode_follows_the_exif_orientation(orientation, expected):
    """A phone photo is stored sideways with an EXIF orientation; it decodes upright."""
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 255, 255)                      # top-left marker
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", exif=exif)
    frame = imaging.decode(buf.getvalue())
    assert frame.shape[:2] == expected and frame.flags.writeable
    marker = {1: (0, 0), 6: (0, 3), 3: (3, 5)}[orientation]  # where top-left ends up
    assert tuple(frame[marker]) == (255, 255, 255)


def test_limits_downscale_keeps_aspect_ratio():
    frame = np.zeros((300, 5000, 3), dtype=np.uint8)
    prepared = imaging.prepare(frame, ImageLimits(max_side=4095, max_pixels=16_000_000))
    assert prepared.downscaled_from == (5000, 300)
    assert prepared.size[0] == 4095 and abs(prepared.size[0] / prepared.size[1] - 5000 / 300) < 0.1


def test_fit_like_batch_images_crops_centre_then_resizes():
    frame = np.zeros((100, 200, 3), dtype=np.uint8)
    frame[:, 50:150] = 255                       # the centre square is white
    fitted = imaging.fit_like_batch_images(frame, 40, 40)
    assert fitted.shape == (40, 40, 3) and fitted.min() == 255


@pytest.mark.parametrize("width,height,expected", [(768, 512, "4:3"), (512, 512, "1:1"),
                                                   (1920, 1080, "16:9"), (500, 1000, "9:16")])
def test_closest_ratio(width, height, expected):
    luma = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
    assert imaging.closest_ratio(width, height, luma) == expected


def test_colour_text():
    assert parse_colors("#f80, rgb(1,2,3)\n#223344") == [
        {"r": 255, "g": 136, "b": 0}, {"r": 1, "g": 2, "b": 3}, {"r": 34, "g": 51, "b": 68}]
    assert parse_colors("  ") == []
    with pytest.raises(InputProblem, match="'rgb\\(300, 0, 0\\)'"):
        parse_colors("rgb(300, 0, 0)")
