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


PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
]


def _heat(value: float) -> tuple:
    """A dark-blue -> teal -> yellow colour ramp for value in [0, 1]."""
    stops = [(0.0, (30, 20, 90)), (0.5, (30, 150, 140)), (1.0, (250, 230, 40))]
    for (v0, c0), (v1, c1) in zip(stops, stops[1:]):
        if value <= v1:
            t = (value - v0) / (v1 - v0)
            return tuple(int(a + (b - a) * t) for a, b in zip(c0, c1))
    return stops[-1][1]


def regions_panel(
    token_index: np.ndarray, reference: np.ndarray, rate: np.ndarray, labels: dict, title: str
) -> torch.Tensor:
    """Regions (one colour per token, reference region outlined in white) beside the rate map, with a
    legend. token_index / reference / rate: (H, W) arrays of one image. Returns (1, H', W', 3) in [0, 1]."""
    side = 256
    h, w = token_index.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    regions = np.zeros((h, w, 3), dtype=np.uint8)
    present = [int(t) for t in np.unique(token_index)]
    for t in present:
        regions[token_index == t] = PALETTE[t % len(PALETTE)]
    regions[reference > 0] = (regions[reference > 0] * 0.6 + 255 * 0.4).astype(np.uint8)
    lo, hi = float(rate.min()), float(rate.max())
    norm = (rate - lo) / (hi - lo) if hi > lo else np.zeros_like(rate)
    heat = np.array([[_heat(v) for v in row] for row in norm], dtype=np.uint8)
    legend_h = 28 + 16 * ((len(present) + 2) // 3)
    canvas = Image.new("RGB", (2 * size[0] + 30, size[1] + 40 + legend_h), BACKGROUND)
    canvas.paste(Image.fromarray(regions).resize(size, Image.NEAREST), (10, 30))
    canvas.paste(Image.fromarray(heat).resize(size, Image.NEAREST), (20 + size[0], 30))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    draw.text((10, 8), title, fill=TEXT, font=font)
    draw.text((20 + size[0], size[1] + 34), f"rate {lo:.2f} (dark) .. {hi:.2f} (bright)", fill=TEXT, font=font)
    draw.text((10, size[1] + 34), "regions (light: reference)", fill=TEXT, font=font)
    for i, t in enumerate(present):
        x, y = 10 + (i % 3) * ((2 * size[0]) // 3), size[1] + 54 + 16 * (i // 3)
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=PALETTE[t % len(PALETTE)])
        draw.text((x + 14, y), f"{t}: {labels.get(t, '?')}"[:28], fill=TEXT, font=font)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]
