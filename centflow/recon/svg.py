"""SVG charts for the HTML report (`centflow.recon.html`): columns, stacked columns, bars.

Pure functions from plain data to SVG text, drawn inline in the page: no
script, no external file, no namespace URL (inline SVG in HTML needs none).
Values are exact (``int`` or ``Decimal``) and every label and tooltip shows
them as exact strings (`amount_text`); they become ``float`` only for pixel
geometry, rounded to a tenth of a pixel, so the same data always gives the
same text. Every piece of text is escaped here; callers pass plain strings.

Each bar carries a ``<title>``, which browsers show as a tooltip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape

from centflow.errors import invariant

Number = int | Decimal

FONT_PX = 10
AXIS_COLOUR = "#8a8f98"
GRID_COLOUR = "#e3e5e8"
TEXT_COLOUR = "#2b2f36"
TRACK_COLOUR = "#eceef1"
TICKS_TARGET = 4  # gridlines aimed for on a value axis
X_LABELS_MAX = 5  # labels under a column chart
BARS_MAX = 10_000  # a chart of more columns than this is a caller's bug


@dataclass(frozen=True, slots=True)
class Bar:
    """One column (or bar): its axis label, exact value and tooltip."""

    label: str
    value: Number
    tooltip: str


@dataclass(frozen=True, slots=True)
class Series:
    """One layer of a stacked column chart: a name, a colour and a count per category."""

    name: str
    colour: str
    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Share:
    """One row of a share chart: `part` drawn as a share of `whole` (both exact)."""

    label: str
    whole: Decimal
    part: Decimal
    text: str


def amount_text(value: Number) -> str:
    """An exact amount with thousands separators and no trailing zeros; never via float.

    >>> amount_text(Decimal("1234.500000")), amount_text(Decimal("-0.000000")), amount_text(7)
    ('1,234.5', '0', '7')
    """
    invariant(isinstance(value, int | Decimal), "amount_text of a %s", type(value).__name__)
    if isinstance(value, int):
        return f"{value:,}"
    invariant(value.is_finite(), "amount_text of %s", value)
    if value == 0:
        return "0"
    text = f"{value:,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def nice_ticks(low: Number, high: Number) -> list[Decimal]:
    """Gridline values, 1, 2 or 5 times a power of ten apart, covering 0, `low` and `high`.

    >>> [str(tick) for tick in nice_ticks(0, Decimal("860.9"))]
    ['0', '500', '1000']
    >>> [str(tick) for tick in nice_ticks(-3, 7)]
    ['-5', '0', '5', '10']
    >>> nice_ticks(0, 0)
    [Decimal('0'), Decimal('1')]
    """
    low_d, high_d = min(Decimal(low), Decimal(0)), max(Decimal(high), Decimal(0))
    span = high_d - low_d
    if span == 0:
        return [Decimal(0), Decimal(1)]
    raw = span / TICKS_TARGET
    magnitude = Decimal(1).scaleb(raw.adjusted())
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = (low_d / step).to_integral_value(rounding="ROUND_FLOOR")
    last = (high_d / step).to_integral_value(rounding="ROUND_CEILING")
    ticks = [(first + index) * step for index in range(int(last - first) + 1)]
    invariant(ticks[0] <= low_d and ticks[-1] >= high_d, "ticks %s miss %s..%s", ticks, low, high)
    return [_plain(tick) for tick in ticks]


def _plain(value: Decimal) -> Decimal:
    """`value` without trailing zeros and never in exponent form (500, not 5E+2)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def _px(value: float) -> str:
    """A coordinate, to a tenth of a pixel (fixed text for the same value)."""
    text = f"{value:.1f}"
    return "0" if text == "-0.0" else text.removesuffix(".0")


def _text(x: float, y: float, content: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{_px(x)}" y="{_px(y)}" text-anchor="{anchor}"{extra}>{escape(content)}</text>'


def _open(width: int, height: int, label: str) -> str:
    return (
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}" font-size="{FONT_PX}" fill="{TEXT_COLOUR}">'
        f"<title>{escape(label)}</title>"
    )


def _label_indices(count: int) -> list[int]:
    """Which of `count` columns get an axis label: at most X_LABELS_MAX, both ends included.

    >>> _label_indices(1), _label_indices(3), _label_indices(24)
    ([0], [0, 1, 2], [0, 6, 12, 17, 23])
    """
    if count <= X_LABELS_MAX:
        return list(range(count))
    return sorted(
        {round(index * (count - 1) / (X_LABELS_MAX - 1)) for index in range(X_LABELS_MAX)}
    )


def column_chart(
    bars: Sequence[Bar], colour: str, label: str, width: int = 300, height: int = 130
) -> str:
    """Columns over a value axis that covers zero (negative values hang below it)."""
    invariant(0 < len(bars) <= BARS_MAX, "column chart of %s bars", len(bars))
    left, right, top, bottom = 58, 6, 8, 20
    plot_width, plot_height = width - left - right, height - top - bottom
    ticks = nice_ticks(min(bar.value for bar in bars), max(bar.value for bar in bars))
    low, span = float(ticks[0]), float(ticks[-1] - ticks[0])

    def y_of(value: Number) -> float:
        return top + plot_height * (1 - (float(value) - low) / span)

    parts = [_open(width, height, label)]
    for tick in ticks:
        y = y_of(tick)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{_px(y)}" y2="{_px(y)}" '
            f'stroke="{AXIS_COLOUR if tick == 0 else GRID_COLOUR}" stroke-width="1"/>'
        )
        parts.append(_text(left - 4, y + FONT_PX / 2 - 1, amount_text(tick), "end"))
    slot = plot_width / len(bars)
    bar_width = max(slot * 0.8, 1.0)
    zero = y_of(0)
    for index, bar in enumerate(bars):
        x = left + index * slot + (slot - bar_width) / 2
        y = y_of(bar.value)
        parts.append(
            f'<rect x="{_px(x)}" y="{_px(min(y, zero))}" width="{_px(bar_width)}" '
            f'height="{_px(abs(zero - y))}" fill="{colour}"><title>{escape(bar.tooltip)}</title></rect>'
        )
    for index in _label_indices(len(bars)):
        centre = left + (index + 0.5) * slot
        anchor = "middle"
        if len(bars) > X_LABELS_MAX and index == 0:
            anchor, centre = "start", left
        elif len(bars) > X_LABELS_MAX and index == len(bars) - 1:
            anchor, centre = "end", width - right
        parts.append(_text(centre, height - 6, bars[index].label, anchor))
    parts.append("</svg>")
    return "".join(parts)


def stacked_columns(
    categories: Sequence[str], series: Sequence[Series], label: str, width: int = 300,
    height: int = 170,
) -> str:  # fmt: skip
    """One column per category, its series stacked in order (counts)."""
    invariant(len(categories) > 0, "stacked chart without categories")
    invariant(all(len(layer.values) == len(categories) for layer in series), "ragged series")
    left, right, top, bottom = 40, 6, 8, 20
    plot_width, plot_height = width - left - right, height - top - bottom
    totals = [sum(layer.values[index] for layer in series) for index in range(len(categories))]
    ticks = nice_ticks(0, max(totals, default=0))
    span = float(ticks[-1])
    parts = [_open(width, height, label)]
    for tick in ticks:
        y = top + plot_height * (1 - float(tick) / span)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{_px(y)}" y2="{_px(y)}" '
            f'stroke="{AXIS_COLOUR if tick == 0 else GRID_COLOUR}" stroke-width="1"/>'
        )
        parts.append(_text(left - 4, y + FONT_PX / 2 - 1, amount_text(tick), "end"))
    slot = plot_width / len(categories)
    bar_width = slot * 0.6
    for index, category in enumerate(categories):
        x = left + index * slot + (slot - bar_width) / 2
        stacked = 0
        for layer in series:
            count = layer.values[index]
            if count:
                y_top = top + plot_height * (1 - (stacked + count) / span)
                tall = plot_height * count / span
                parts.append(
                    f'<rect x="{_px(x)}" y="{_px(y_top)}" width="{_px(bar_width)}" '
                    f'height="{_px(tall)}" fill="{layer.colour}">'
                    f"<title>{escape(f'{category}: {count:,} {layer.name}')}</title></rect>"
                )
            stacked += count
        parts.append(_text(left + (index + 0.5) * slot, height - 6, category, "middle"))
    parts.append("</svg>")
    return "".join(parts)


def bar_rows(
    rows: Sequence[tuple[Bar, str]], label: str, width: int = 420, row_height: int = 22
) -> str:
    """Horizontal bars, one row per (bar, colour), scaled to the largest (non-negative) value."""
    invariant(all(bar.value >= 0 for bar, _ in rows), "bar_rows of a negative value")
    left, value_width = 150, 70
    height = row_height * len(rows) + 4
    track = width - left - value_width
    largest = max((float(bar.value) for bar, _ in rows), default=0.0) or 1.0
    parts = [_open(width, height, label)]
    for index, (bar, colour) in enumerate(rows):
        y = 2 + index * row_height
        length = track * float(bar.value) / largest
        parts.append(_text(left - 6, y + row_height / 2 + FONT_PX / 2 - 2, bar.label, "end"))
        parts.append(
            f'<rect x="{left}" y="{_px(y + 3)}" width="{_px(length)}" '
            f'height="{row_height - 6}" fill="{colour}"><title>{escape(bar.tooltip)}</title></rect>'
        )
        parts.append(
            _text(left + length + 4, y + row_height / 2 + FONT_PX / 2 - 2, amount_text(bar.value))
        )
    parts.append("</svg>")
    return "".join(parts)


def share_rows(
    rows: Sequence[Share], whole_colour: str, part_colour: str, label: str, width: int = 1180,
    row_height: int = 24,
) -> str:  # fmt: skip
    """One row per share: a track for `whole`, filled to `part / whole`, and its text."""
    left, track = 60, 420
    height = row_height * len(rows) + 4
    parts = [_open(width, height, label)]
    for index, row in enumerate(rows):
        y = 2 + index * row_height
        share = float(row.part / row.whole) if row.whole > 0 else 0.0
        filled = track * min(max(share, 0.0), 1.0)
        baseline = y + row_height / 2 + FONT_PX / 2 - 2
        parts.append(_text(left - 8, baseline, row.label, "end"))
        parts.append(
            f'<rect x="{left}" y="{_px(y + 3)}" width="{track}" height="{row_height - 6}" '
            f'fill="{whole_colour}"><title>{escape(row.text)}</title></rect>'
        )
        parts.append(
            f'<rect x="{left}" y="{_px(y + 3)}" width="{_px(filled)}" height="{row_height - 6}" '
            f'fill="{part_colour}"><title>{escape(row.text)}</title></rect>'
        )
        parts.append(_text(left + track + 10, baseline, row.text))
    parts.append("</svg>")
    return "".join(parts)


def swatches(items: Sequence[tuple[str, str]]) -> str:
    """A legend: (name, colour) pairs as coloured squares and names (HTML, not SVG)."""
    return "".join(
        f'<span class="swatch"><i style="background:{colour}"></i>{escape(name)}</span>'
        for name, colour in items
    )
