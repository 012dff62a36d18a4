"""Draws the sample images the demo, tests and example workflows use.

They are made here, by code, so they are ours to ship: run this script to make
them again (`python tools/make_samples.py`).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parents[1] / "assets"


def portrait(width: int = 768, height: int = 512) -> Image.Image:
    """A person in front of a street with two small figures behind: something to
    change the background of, remove people from, correct and sharpen."""
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for y in range(height):  # a slightly warm, washed-out sky: room for colour correction
        t = y / height
        draw.line([(0, y), (width, y)], fill=(int(170 + 40 * t), int(160 + 30 * t), int(120 + 20 * t)))
    draw.rectangle([0, int(height * 0.68), width, height], fill=(120, 110, 95))     # pavement
    for x, h in ((40, 180), (170, 240), (560, 210), (660, 260)):                      # houses
        draw.rectangle([x, int(height * 0.68) - h, x + 100, int(height * 0.68)], fill=(150, 120, 100))
        for wy in range(int(height * 0.68) - h + 20, int(height * 0.68) - 30, 50):
            draw.rectangle([x + 20, wy, x + 40, wy + 25], fill=(90, 100, 120))
            draw.rectangle([x + 60, wy, x + 80, wy + 25], fill=(90, 100, 120))
    for x in (110, 620):                                                            # background people
        draw.ellipse([x, 270, x + 24, 294], fill=(200, 160, 130))
        draw.rectangle([x - 4, 294, x + 28, 350], fill=(60, 70, 140))
    cx = width // 2                                                                 # the subject
    draw.rectangle([cx - 110, 300, cx + 110, height], fill=(170, 40, 50))
    draw.ellipse([cx - 70, 130, cx + 70, 300], fill=(225, 180, 150))
    draw.pieslice([cx - 78, 112, cx + 78, 250], 180, 360, fill=(70, 45, 30))
    for ex in (cx - 30, cx + 30):
        draw.ellipse([ex - 9, 200, ex + 9, 214], fill=(255, 255, 255))
        draw.ellipse([ex - 4, 202, ex + 4, 212], fill=(40, 30, 20))
    draw.arc([cx - 30, 235, cx + 30, 270], 20, 160, fill=(150, 60, 60), width=4)
    return img.filter(ImageFilter.GaussianBlur(1.2))  # soft: something for Sharpen to do


def duckling(width: int = 512, height: int = 512) -> Image.Image:
    """A second reference image for the multi-image (Kontext) node."""
    img = Image.new("RGB", (width, height), (200, 225, 240))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 380, width, height], fill=(110, 170, 90))
    draw.ellipse([150, 230, 370, 400], fill=(250, 210, 40))       # body
    draw.ellipse([260, 150, 370, 260], fill=(250, 210, 40))       # head
    draw.polygon([(365, 200), (420, 212), (365, 225)], fill=(240, 130, 20))
    draw.ellipse([320, 180, 334, 194], fill=(20, 20, 20))
    return img


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    portrait().save(OUT / "sample_portrait.png", optimize=True)
    duckling().save(OUT / "sample_duckling.png", optimize=True)
    print("wrote", *sorted(p.name for p in OUT.glob("sample_*.png")))
