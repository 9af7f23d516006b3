"""Regenerates tests/data/raster/cv2_line_refs.json: a few small images drawn with cv2.line(..., 1, cv2.LINE_AA).

Run from the crate root with opencv-python-headless and numpy installed:
    python scripts/make_cv2_line_refs.py
Each case: canvas size, optional background ("gradient": level (3x + 5y + 40c) mod 256), the lines
(x0, y0, x1, y1, r, g, b) drawn in order, and the resulting interleaved RGB bytes as hex.
"""
import json

import cv2
import numpy as np


def background(kind, w, h):
    img = np.zeros((h, w, 3), np.uint8)
    if kind == "gradient":
        y, x, c = np.mgrid[0:h, 0:w, 0:3]
        img[:] = ((3 * x + 5 * y + 40 * c) % 256).astype(np.uint8)
    return img


def random_lines(rng, n, w, h, spread):
    out = []
    for _ in range(n):
        x0, x1 = (int(v) for v in rng.integers(-spread, w + spread, 2))
        y0, y1 = (int(v) for v in rng.integers(-spread, h + spread, 2))
        r, g, b = (int(v) for v in rng.integers(0, 256, 3))
        out.append([x0, y0, x1, y1, r, g, b])
    return out


def main():
    rng = np.random.default_rng(2024)
    cases = [
        {"name": "slopes", "width": 32, "height": 32, "background": "black", "lines": [
            [2, 2, 29, 29, 255, 255, 255], [1, 20, 30, 24, 200, 40, 10], [20, 1, 25, 30, 10, 180, 250],
            [30, 3, 3, 12, 90, 90, 255], [5, 28, 28, 27, 255, 0, 128], [16, 0, 16, 31, 60, 255, 60]]},
        {"name": "clipping", "width": 32, "height": 32, "background": "black", "lines": [
            [-10, 5, 40, 9, 255, 255, 255], [-20, -20, 50, 45, 255, 128, 0], [5, -30, 12, 70, 0, 255, 255],
            [-5, -5, -1, 40, 255, 0, 0], [40, 0, 50, 31, 0, 255, 0], [31, 0, 0, 31, 128, 128, 255],
            [0, 0, 31, 0, 250, 250, 0], [-100000, 3, 100000, 29, 77, 177, 227]]},
        {"name": "dots_and_overlap", "width": 24, "height": 24, "background": "black", "lines": [
            [5, 5, 5, 5, 255, 255, 255], [0, 0, 0, 0, 255, 0, 0], [23, 23, 23, 23, 0, 0, 255],
            [3, 12, 20, 12, 255, 0, 0], [3, 12, 20, 12, 0, 0, 255], [12, 3, 12, 20, 0, 255, 0],
            [2, 20, 21, 4, 255, 255, 0], [2, 20, 21, 4, 255, 255, 0]]},
        {"name": "over_gradient", "width": 32, "height": 24, "background": "gradient",
         "lines": random_lines(rng, 12, 32, 24, 6)},
        {"name": "random_64x48", "width": 64, "height": 48, "background": "black",
         "lines": random_lines(rng, 40, 64, 48, 10)},
    ]
    for case in cases:
        img = background(case["background"], case["width"], case["height"])
        for x0, y0, x1, y1, r, g, b in case["lines"]:
            cv2.line(img, (x0, y0), (x1, y1), (r, g, b), 1, cv2.LINE_AA)
        case["rgb_hex"] = img.tobytes().hex()
    doc = {"generator": f"cv2 {cv2.__version__} line thickness=1 LINE_AA", "cases": cases}
    with open("tests/data/raster/cv2_line_refs.json", "w") as f:
        json.dump(doc, f, indent=0)


if __name__ == "__main__":
    main()
