"""Procedural bar, line and pie charts drawn with PIL: ``ChartSource`` (domain ``"charts"``).

Each chart has a title ("Sales by Region"), 3 to 6 categories with short labels, distinct integer
values and distinct named colours. Bar and line charts have a y axis from 0 to a round maximum with
ticks and grid lines, category labels under the x axis and each value written above its bar or
point (the line is grey; its points take the category colours). Pie charts start at twelve o'clock,
go clockwise and have a legend ("Apple: 42") beside them. ``kinds`` limits the chart types drawn.

**Pairs.** The modified chart differs in exactly two attributes, by one edit chosen with the
generator: swap the values of two categories, swap their colours, give two categories new values,
new colours or new labels (new values, colours and labels are unused in the chart). The title,
chart type, axis range and category order never change.

**Descriptions.** ``description`` (and ``modified_description``) is::

    {"kind": "chart", "chart_type": "bar", "title": "Sales by Region",
     "items": [{"label": "North", "value": 42, "colour": "blue"}, ...],
     "stable_attributes": ["chart_type", "title"]}

with items in drawing order (left to right; clockwise for pies). ``changes`` holds one dict per
changed attribute, naming the item by its label in the original:
``{"item": "North", "attribute": "value", "before": 42, "after": 17}``.

**Determinism and speed.** Each sample draws one seed from the caller's generator; the seed alone
fixes the chart, and ``pair_id`` is ``"chart-<seed in hex>"``. Text uses Pillow's built-in font
(``ImageFont.load_default(size=...)``), so no font files are needed. ``pool_size > 0`` pre-renders
that many pairs at construction from ``numpy.random.default_rng(pool_seed)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from games.checks import check_int
from games.images.base import ImagePair, ProceduralSource, SceneImage

CHART_TYPES = ("bar", "line", "pie")
PALETTE: dict[str, tuple[int, int, int]] = {
    "blue": (31, 119, 180), "orange": (255, 127, 14), "green": (44, 160, 44),
    "red": (214, 39, 40), "purple": (148, 103, 189), "brown": (140, 86, 75),
    "pink": (227, 119, 194), "gray": (127, 127, 127), "olive": (188, 189, 34),
    "cyan": (23, 190, 207),
}
COLOUR_NAMES = tuple(PALETTE)
#: Category labels by topic, in their natural order (charts keep it).
TOPICS: dict[str, tuple[str, ...]] = {
    "Region": ("North", "South", "East", "West", "Central", "Coast", "Islands", "Uplands"),
    "Fruit": ("Apple", "Banana", "Cherry", "Grape", "Lemon", "Mango", "Pear", "Plum"),
    "Month": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "Team": ("Lions", "Tigers", "Bears", "Wolves", "Eagles", "Hawks", "Sharks", "Foxes"),
    "City": ("Paris", "Tokyo", "Lima", "Cairo", "Oslo", "Delhi", "Rome", "Quito"),
    "Product": ("Laptop", "Phone", "Tablet", "Camera", "Watch", "Drone", "Printer", "Speaker"),
    "Sport": ("Tennis", "Soccer", "Hockey", "Golf", "Rugby", "Cricket", "Boxing", "Rowing"),
}
TOPIC_NAMES = tuple(TOPICS)
METRICS = ("Sales", "Revenue", "Visitors", "Orders", "Downloads", "Members", "Votes", "Tickets")
#: Largest value a chart may show; its y axis runs from 0 to this in five steps.
SCALES = (10, 20, 50, 100, 200, 500, 1000)
#: The edits a modified chart may get: (how, which attribute of two items).
EDITS = (("swap", "value"), ("swap", "colour"), ("new", "value"), ("new", "colour"),
         ("new", "label"))
STABLE_ATTRIBUTES = ("chart_type", "title")
MIN_ITEMS, MAX_ITEMS = 3, 6

_INK, _GRID, _LINE = (40, 40, 40), (225, 225, 225), (90, 90, 90)
_PIE_SUPERSAMPLE = 3


@dataclass(frozen=True)
class _Chart:
    chart_type: str
    topic: str
    title: str
    scale: int
    labels: tuple[str, ...]
    values: tuple[int, ...]
    colours: tuple[str, ...]


def _value_range(scale: int) -> range:
    """The values a chart with axis maximum ``scale`` may show."""
    return range(max(1, scale // 10), scale + 1)


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError("ChartSource needs Pillow built with FreeType for its scalable font")
    return font


@cache
def _fitting_font(texts: tuple[str, ...], max_width: float, size: int) -> ImageFont.FreeTypeFont:
    """The built-in font at ``size`` or smaller (down to 6 px) in which every text fits
    ``max_width``."""
    while size > 6 and max(_font(size).getlength(text) for text in texts) > max_width:
        size -= 1
    return _font(size)


class ChartSource(ProceduralSource):
    """Procedural bar, line and pie charts and pairs with two attributes edited (see the module
    doc)."""

    domain = "charts"
    provides = ("pairs", "images")

    def __init__(self, *, width: int = 320, height: int = 240,
                 kinds: str | Iterable[str] = CHART_TYPES, pool_size: int = 0,
                 pool_seed: int = 0) -> None:
        super().__init__(pool_size, pool_seed)
        owner = type(self).__name__
        self.width = check_int(f"{owner}.width", width, 160, 4096)
        self.height = check_int(f"{owner}.height", height, 120, 4096)
        self.kinds = self._check_kinds(owner, kinds)
        self._unit = min(self.width / 320, self.height / 240)
        self._fill_pool()

    @staticmethod
    def _check_kinds(owner: str, kinds: str | Iterable[str]) -> tuple[str, ...]:
        if isinstance(kinds, str):
            kinds = (kinds,)
        chosen = tuple(kinds) if isinstance(kinds, Iterable) else ()
        if not chosen or any(kind not in CHART_TYPES for kind in chosen):
            raise ValueError(f"{owner}: kinds must name one or more of {', '.join(CHART_TYPES)}, "
                             f"got {kinds!r}")
        return tuple(dict.fromkeys(chosen))

    def render_image(self, seed: int) -> SceneImage:
        chart = self._chart(np.random.default_rng(seed))
        return SceneImage(self._draw(chart), f"chart-{seed:016x}", self._describe(chart))

    def render_pair(self, seed: int) -> ImagePair:
        rng = np.random.default_rng(seed)
        chart = self._chart(rng)
        modified, changes = self._edit(chart, rng)
        return ImagePair(self._draw(chart), self._draw(modified), f"chart-{seed:016x}",
                         self._describe(chart), self._describe(modified), changes)

    def _chart(self, rng: np.random.Generator) -> _Chart:
        chart_type = self.kinds[int(rng.integers(len(self.kinds)))]
        topic = TOPIC_NAMES[int(rng.integers(len(TOPICS)))]
        metric = METRICS[int(rng.integers(len(METRICS)))]
        count = int(rng.integers(MIN_ITEMS, MAX_ITEMS + 1))
        scale = SCALES[int(rng.integers(len(SCALES)))]
        labels = sorted(rng.choice(len(TOPICS[topic]), count, replace=False).tolist())
        values = rng.choice(_value_range(scale), count, replace=False)
        colours = rng.choice(len(PALETTE), count, replace=False)
        return _Chart(chart_type, topic, f"{metric} by {topic}", scale,
                      tuple(TOPICS[topic][i] for i in labels), tuple(int(v) for v in values),
                      tuple(COLOUR_NAMES[i] for i in colours))

    @staticmethod
    def _edit(chart: _Chart, rng: np.random.Generator) -> tuple[_Chart, tuple[dict[str, Any], ...]]:
        """The chart with two attributes edited, and the change log."""
        how, attribute = EDITS[int(rng.integers(len(EDITS)))]
        first, second = sorted(rng.choice(len(chart.labels), 2, replace=False).tolist())
        field = f"{attribute}s"
        old = getattr(chart, field)
        if how == "swap":
            after = (old[second], old[first])
        else:
            options = {"value": _value_range(chart.scale), "colour": COLOUR_NAMES,
                       "label": TOPICS[chart.topic]}[attribute]
            unused = [option for option in options if option not in old]
            picks = rng.choice(len(unused), 2, replace=False)
            after = (unused[picks[0]], unused[picks[1]])
        new = list(old)
        new[first], new[second] = after
        changes = tuple({"item": chart.labels[index], "attribute": attribute,
                         "before": old[index], "after": value}
                        for index, value in zip((first, second), after, strict=True))
        return replace(chart, **{field: tuple(new)}), changes

    def _describe(self, chart: _Chart) -> dict[str, Any]:
        return {"kind": "chart", "chart_type": chart.chart_type, "title": chart.title,
                "items": [{"label": label, "value": value, "colour": colour} for label, value,
                          colour in zip(chart.labels, chart.values, chart.colours, strict=True)],
                "stable_attributes": list(STABLE_ATTRIBUTES)}

    def _size(self, pixels: float) -> int:
        """``pixels`` at 320x240, scaled to this source's size."""
        return max(1, round(pixels * self._unit))

    def _draw(self, chart: _Chart) -> np.ndarray:
        image = Image.new("RGB", (self.width, self.height), "white")
        draw = ImageDraw.Draw(image)
        title_font = _fitting_font((chart.title,), self.width - self._size(12), self._size(15))
        draw.text((self.width / 2, self._size(5)), chart.title, fill=_INK, font=title_font,
                  anchor="mt")
        below_title = self._size(5) + title_font.size + self._size(4)
        if chart.chart_type == "pie":
            self._draw_pie(image, chart, below_title)
        else:
            self._draw_axes_chart(draw, chart, below_title)
        return np.asarray(image)

    def _draw_axes_chart(self, draw: ImageDraw.ImageDraw, chart: _Chart, top: int) -> None:
        """A bar or line chart below ``top``."""
        tick_font = _font(max(6, self._size(10)))
        ticks = [chart.scale * step // 5 for step in range(6)]
        left = self._size(12) + round(max(tick_font.getlength(str(tick)) for tick in ticks))
        right = self.width - self._size(10)
        slot = (right - left) / len(chart.labels)
        label_font = _fitting_font(TOPICS[chart.topic], slot * 0.95, self._size(10))
        bottom = self.height - self._size(8) - label_font.size
        top += tick_font.size + self._size(4)  # room for the value written above the top bar

        def height_of(value: int) -> float:
            return bottom - value / chart.scale * (bottom - top)

        for tick in ticks:
            y = height_of(tick)
            draw.line([(left, y), (right, y)], fill=_GRID)
            draw.text((left - self._size(4), y), str(tick), fill=_INK, font=tick_font, anchor="rm")
        draw.line([(left, top), (left, bottom), (right, bottom)], fill=_INK)
        centres = [left + slot * (index + 0.5) for index in range(len(chart.labels))]
        tops = [height_of(value) for value in chart.values]
        if chart.chart_type == "line":
            draw.line(list(zip(centres, tops, strict=True)), fill=_LINE, width=self._size(2))
        marker = self._size(4)
        for centre, y, value, colour in zip(centres, tops, chart.values, chart.colours,
                                            strict=True):
            if chart.chart_type == "bar":
                draw.rectangle([centre - 0.3 * slot, y, centre + 0.3 * slot, bottom - 1],
                               fill=PALETTE[colour])
            else:
                draw.ellipse([centre - marker, y - marker, centre + marker, y + marker],
                             fill=PALETTE[colour], outline=_INK)
                y -= marker
            draw.text((centre, y - self._size(2)), str(value), fill=_INK, font=tick_font,
                      anchor="mb")
        for centre, label in zip(centres, chart.labels, strict=True):
            draw.text((centre, bottom + self._size(4)), label, fill=_INK, font=label_font,
                      anchor="mt")

    def _draw_pie(self, image: Image.Image, chart: _Chart, top: int) -> None:
        """A pie chart below ``top`` with its legend on the right."""
        margin = self._size(8)
        radius = round(min((self.height - top - margin) / 2, 0.3 * self.width))
        centre_x, centre_y = margin + radius, round((top + self.height - margin) / 2)
        # The pie is drawn at _PIE_SUPERSAMPLE times the size and shrunk, to smooth its edges.
        big = Image.new("RGB", (2 * radius * _PIE_SUPERSAMPLE,) * 2, "white")
        big_draw = ImageDraw.Draw(big)
        total = sum(chart.values)
        start = -90.0
        for value, colour in zip(chart.values, chart.colours, strict=True):
            end = start + 360 * value / total
            big_draw.pieslice([0, 0, big.width - 1, big.height - 1], start, end,
                              fill=PALETTE[colour], outline="white", width=_PIE_SUPERSAMPLE)
            start = end
        image.paste(big.resize((2 * radius, 2 * radius), Image.Resampling.BOX),
                    (centre_x - radius, centre_y - radius))
        draw = ImageDraw.Draw(image)
        legend_x = centre_x + radius + self._size(16)
        swatch = self._size(10)
        widest = tuple(f"{label}: {chart.scale}" for label in TOPICS[chart.topic])
        font = _fitting_font(widest, self.width - legend_x - swatch - 2 * margin, self._size(11))
        row = font.size * 1.6
        first_y = centre_y - row * (len(chart.labels) - 1) / 2
        for index, (label, value, colour) in enumerate(zip(chart.labels, chart.values,
                                                           chart.colours, strict=True)):
            y = first_y + index * row
            draw.rectangle([legend_x, y - swatch / 2, legend_x + swatch, y + swatch / 2],
                           fill=PALETTE[colour])
            draw.text((legend_x + swatch + self._size(5), y), f"{label}: {value}", fill=_INK,
                      font=font, anchor="lm")
