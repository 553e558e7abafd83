"""A small line chart drawn with PIL (ComfyUI ships no plotting library), as a ComfyUI IMAGE."""

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 360
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 20, 40, 48
BACKGROUND, AXIS, GRID, LINE, TEXT = (24, 24, 28), (200, 200, 200), (60, 60, 68), (94, 180, 255), (230, 230, 230)


def _nice_range(values: list) -> tuple:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-6:
        lo, hi = lo - 1.0, hi + 1.0
    pad = 0.08 * (hi - lo)
    return lo - pad, hi + pad


def line_chart(ys: list, title: str, x_label: str, y_label: str, x_ticks: dict) -> torch.Tensor:
    """Draw ys against their index; x_ticks maps index -> label. Returns (1, H, W, 3) in [0, 1]."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    y_lo, y_hi = _nice_range(ys)
    last = max(len(ys) - 1, 1)

    def to_px(i: float, y: float) -> tuple:
        return left + (right - left) * i / last, bottom - (bottom - top) * (y - y_lo) / (y_hi - y_lo)

    for k in range(5):
        value = y_lo + (y_hi - y_lo) * k / 4
        _, py = to_px(0, value)
        draw.line([(left, py), (right, py)], fill=GRID)
        draw.text((4, py - 6), f"{value:.2f}", fill=TEXT, font=font)
    for index, label in x_ticks.items():
        px, _ = to_px(index, y_lo)
        draw.line([(px, bottom), (px, bottom + 4)], fill=AXIS)
        draw.text((px - 10, bottom + 6), label, fill=TEXT, font=font)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS)
    points = [to_px(i, y) for i, y in enumerate(ys)]
    if len(points) > 1:
        draw.line(points, fill=LINE, width=2)
    for px, py in points:
        draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=LINE)
    draw.text((left, 12), title, fill=TEXT, font=font)
    draw.text(((left + right) / 2 - 40, HEIGHT - 18), x_label, fill=TEXT, font=font)
    draw.text((4, top - 16), y_label, fill=TEXT, font=font)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
