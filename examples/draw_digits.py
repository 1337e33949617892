"""Draw the pictures of examples/digits/, for `digitlab predict --data.predict_images examples/digits`.

A pen photo (JPEG, uneven light), chalk on a board, a marker on a transparent canvas, a small greyscale scan;
the digit each shows starts its file name. Run from the repository root: python examples/draw_digits.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent / "digits"
STROKES = {  # polylines in a unit box (x right, y down)
    "3": [[(0.15, 0.15), (0.35, 0.02), (0.65, 0.02), (0.85, 0.18), (0.8, 0.38), (0.45, 0.5), (0.85, 0.62),
           (0.9, 0.82), (0.65, 0.98), (0.3, 0.98), (0.1, 0.85)]],
    "7": [[(0.1, 0.05), (0.9, 0.05), (0.55, 0.55), (0.4, 0.97)]],
    "4": [[(0.6, 0.02), (0.1, 0.65), (0.9, 0.65)], [(0.65, 0.3), (0.65, 0.98)]],
    "2": [[(0.12, 0.22), (0.35, 0.03), (0.7, 0.03), (0.88, 0.25), (0.8, 0.5), (0.1, 0.97), (0.92, 0.97)]],
}


def draw(digit, size, box, width, ink, background, mode="RGB"):
    image = Image.new(mode, size, background)
    pen = ImageDraw.Draw(image)
    (x0, y0), (w, h) = box[:2], (box[2] - box[0], box[3] - box[1])
    for line in STROKES[digit]:
        points = [(x0 + x * w, y0 + y * h) for x, y in line]
        pen.line(points, fill=ink, width=width, joint="curve")
        for x, y in (points[0], points[-1]):
            pen.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=ink)
    return image


OUT.mkdir(exist_ok=True)
# Pen on paper, photographed: lit from the left, blurred a little, JPEG.
pen = draw("3", (300, 400), (90, 80, 230, 300), 14, (25, 35, 110), (240, 236, 225))
pen = pen.filter(ImageFilter.GaussianBlur(1.5))
light = np.linspace(1.0, 0.75, 300)[None, :, None]
noise = np.random.default_rng(0).normal(0, 4, (400, 300, 1))
Image.fromarray(np.clip(np.asarray(pen) * light + noise, 0, 255).astype(np.uint8)).save(OUT / "3_pen.jpg", quality=85)
# Chalk on a green board.
draw("7", (200, 160), (60, 20, 140, 140), 11, (235, 235, 220), (30, 70, 45)).save(OUT / "7_chalk.png")
# Marker on a transparent canvas, as drawing apps and HTML canvases export it.
draw("4", (280, 280), (60, 40, 220, 240), 18, (0, 0, 0, 255), (0, 0, 0, 0), mode="RGBA").save(OUT / "4_canvas.png")
# A small greyscale scan, dark on light.
draw("2", (48, 48), (12, 8, 36, 40), 4, 40, 215, mode="L").save(OUT / "2_scan.png")
