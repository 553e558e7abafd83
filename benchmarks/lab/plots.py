"""PNG figures for the lab, drawn with PIL (no plotting library in ComfyUI's environment)."""

import torch
from PIL import Image, ImageDraw

BACKGROUND, AXIS, TEXT = (250, 250, 250), (120, 120, 120), (20, 20, 20)
CLASS_COLOURS = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (148, 103, 189)]


def scatter_panels(panels: dict, mixture, side: int = 300, columns: int = 3) -> Image.Image:
    """One panel per method: 2-D samples coloured by their most probable class, mode means as rings.
    Each panel spans at least +-4.5 and enough to show 98 % of its samples (the span is in the title)."""
    rows = -(-len(panels) // columns)
    figure = Image.new("RGB", (columns * side, rows * (side + 24)), BACKGROUND)
    draw = ImageDraw.Draw(figure)

    def to_pixel(point, left, top, extent):
        x = left + (point[0] + extent) / (2 * extent) * side
        y = top + 24 + (extent - point[1]) / (2 * extent) * side
        return x, y

    for index, (title, samples) in enumerate(panels.items()):
        left, top = (index % columns) * side, (index // columns) * (side + 24)
        extent = max(4.5, samples.flatten(1).abs().amax(dim=1).quantile(0.98).item() * 1.05)
        draw.text((left + 6, top + 6), f"{title}  [+-{extent:.1f}]", fill=TEXT)
        draw.rectangle([left + 2, top + 24, left + side - 2, top + side + 22], outline=AXIS)
        classes = mixture.class_posterior(samples).argmax(dim=1)
        for point, cls in zip(samples.flatten(1).tolist(), classes.tolist()):
            x, y = to_pixel(point, left, top, extent)
            if left < x < left + side and top + 24 < y < top + side + 24:
                draw.point((x, y), fill=CLASS_COLOURS[cls])
        for cls, means in enumerate(mixture.means.flatten(2).tolist()):
            for mean in means:
                x, y = to_pixel(mean, left, top, extent)
                draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=CLASS_COLOURS[cls], width=2)
    return figure


def bar_chart(title: str, values: dict, maximum: float, width: int = 760, bar: int = 22) -> Image.Image:
    """Horizontal bars, one per entry: values are Intervals (estimate, low, high); the bar is the
    estimate, the black whisker the interval, the text the estimate."""
    label_width = 300
    figure = Image.new("RGB", (width, 40 + bar * len(values) + 10), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    draw.text((8, 10), title, fill=TEXT)
    span = width - label_width - 80

    def length(value: float) -> int:
        return int(span * max(0.0, min(value / maximum, 1.0)))

    for row, (label, interval) in enumerate(values.items()):
        top = 40 + row * bar
        draw.text((8, top + 5), label, fill=TEXT)
        draw.rectangle(
            [label_width, top + 3, label_width + length(interval.estimate), top + bar - 3], fill=CLASS_COLOURS[1]
        )
        low, high = label_width + length(interval.low), label_width + length(interval.high)
        middle = top + bar // 2
        draw.line([low, middle, high, middle], fill=TEXT, width=2)
        draw.line([low, top + 6, low, top + bar - 6], fill=TEXT)
        draw.line([high, top + 6, high, top + bar - 6], fill=TEXT)
        draw.text(
            (max(high, label_width + length(interval.estimate)) + 6, top + 5), f"{interval.estimate:.3f}", fill=TEXT
        )
    return figure


def stack_vertically(images: list) -> Image.Image:
    width = max(image.width for image in images)
    figure = Image.new("RGB", (width, sum(image.height for image in images)), BACKGROUND)
    top = 0
    for image in images:
        figure.paste(image, (0, top))
        top += image.height
    return figure


def image_rows(rows: dict, count: int = 12, zoom: int = 8) -> Image.Image:
    """The first `count` 8x8 samples of each setting, one row per setting, values clamped to [0, 1]."""
    label_width, cell = 300, 8 * zoom + 4
    figure = Image.new("RGB", (label_width + count * cell, len(rows) * cell + 4), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    for row, (label, samples) in enumerate(rows.items()):
        top = row * cell + 2
        draw.text((8, top + cell // 2 - 6), label, fill=TEXT)
        for column, image in enumerate(samples[:count]):
            pixels = (image[0].clamp(0, 1) * 255).to(torch.uint8).numpy()
            tile = Image.fromarray(pixels, mode="L").resize((8 * zoom, 8 * zoom), Image.NEAREST).convert("RGB")
            figure.paste(tile, (label_width + column * cell, top))
    return figure
