"""Charts as geometry for inline SVG: a training job's curves, a model's ROC and KS.

The console draws its charts on the server (``templates/bureau/_chart.html`` turns a
``Chart`` into an ``<svg>``): no chart library, no script, nothing the page could fetch
from elsewhere. Everything that needs arithmetic happens here, where it can be tested:
data to pixel coordinates, axis ticks, the ROC points and KS curves from a model's test
scores, and the data table every chart carries for readers who cannot see it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

__all__ = [
    "Chart",
    "KsCurve",
    "Line",
    "Mark",
    "Series",
    "ks_curve",
    "line_chart",
    "roc_points",
    "thin",
]

#: The drawing's size (SVG user units; CSS scales it to the page) and plot area.
WIDTH = 560
HEIGHT = 300
LEFT, RIGHT, TOP, BOTTOM = 64, WIDTH - 16, 16, HEIGHT - 48
#: Most points a curve keeps (a test split of thousands draws no better than this).
MOST_POINTS = 200

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Series:
    """One curve's data: ``(x, y)`` pairs, in order of x."""

    name: str
    values: Sequence[Point]


@dataclass(frozen=True, slots=True)
class Line:
    """One curve as drawn: data and pixel coordinates, pair by pair."""

    name: str
    css: str
    values: tuple[Point, ...]
    points: tuple[Point, ...]

    @property
    def path(self) -> str:
        """The SVG path through the points ('' when there are none)."""
        return " ".join(
            f"{'M' if k == 0 else 'L'}{x:.1f},{y:.1f}" for k, (x, y) in enumerate(self.points)
        )


@dataclass(frozen=True, slots=True)
class Mark:
    """A labelled segment over the plot (the KS gap), in pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything a template needs to draw one chart and its data table."""

    id: str
    title: str
    description: str
    x_label: str
    y_label: str
    lines: tuple[Line, ...]
    x_ticks: tuple[tuple[float, str], ...]
    y_ticks: tuple[tuple[float, str], ...]
    #: The data ranges the plot area spans.
    x_domain: tuple[float, float] = (0.0, 1.0)
    y_domain: tuple[float, float] = (0.0, 1.0)
    markers: bool = True
    marks: tuple[Mark, ...] = ()
    diagonal: bool = False
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = RIGHT
    top: int = TOP
    bottom: int = BOTTOM

    def px(self, x: float) -> float:
        """The pixel column of data value ``x``."""
        low, high = self.x_domain
        return self.left + (x - low) / (high - low) * (self.right - self.left)

    def py(self, y: float) -> float:
        """The pixel row of data value ``y`` (SVG rows grow downwards)."""
        low, high = self.y_domain
        return self.bottom - (y - low) / (high - low) * (self.bottom - self.top)

    def marked(self, x: float, y1: float, y2: float, label: str) -> Chart:
        """This chart with a vertical segment at ``x`` from ``y1`` to ``y2``."""
        mark = Mark(self.px(x), self.py(y1), self.px(x), self.py(y2), label)
        return replace(self, marks=(*self.marks, mark))

    @property
    def empty(self) -> bool:
        return not any(line.points for line in self.lines)

    @property
    def table_headers(self) -> list[str]:
        return [self.x_label, *(line.name for line in self.lines)]

    @property
    def table_rows(self) -> list[list[str]]:
        """The data, row by row: point by point when every curve has the same x values
        (a ROC curve's vertical steps repeat an x: each step keeps its row), else one
        row per x value with each curve's y there ('–' where a curve has none)."""
        integer = all(float(x).is_integer() for line in self.lines for x, _ in line.values)
        columns = [[x for x, _ in line.values] for line in self.lines]
        if columns and all(c == columns[0] for c in columns):
            return [
                [_number(x, integer), *(_number(line.values[k][1]) for line in self.lines)]
                for k, x in enumerate(columns[0])
            ]
        xs = sorted({x for column in columns for x in column})
        by_line = [dict(line.values) for line in self.lines]
        return [
            [_number(x, integer), *(_number(ys[x]) if x in ys else "–" for ys in by_line)]
            for x in xs
        ]


def _number(value: float, integer: bool = False) -> str:
    return str(int(value)) if integer else f"{value:.4f}"


def _nice_step(span: float, ticks: int = 5) -> float:
    """A 1, 2 or 5 times a power of ten step giving about ``ticks`` intervals."""
    rough = span / ticks
    power = 10.0 ** math.floor(math.log10(rough))
    return next(f * power for f in (1.0, 2.0, 5.0, 10.0) if rough <= f * power * (1 + 1e-9))


def _domain(values: Sequence[float], integer: bool) -> tuple[float, float, float]:
    """(low, high, step) covering ``values`` at tick boundaries; a single value (or
    none) gets a span around it, so one point is drawn in the middle, not on an edge."""
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high == low:
        pad = 1.0 if integer or low == 0 else abs(low) * 0.1
        low, high = low - pad, high + pad
    step = _nice_step(high - low)
    if integer:
        step = max(1.0, math.ceil(step))
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def _ticks(low: float, high: float, step: float) -> list[float]:
    count = round((high - low) / step)
    return [low + k * step for k in range(count + 1)]


def _label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def line_chart(
    chart_id: str,
    title: str,
    description: str,
    x_label: str,
    y_label: str,
    series: Sequence[Series],
    *,
    x_domain: tuple[float, float] | None = None,
    y_domain: tuple[float, float] | None = None,
    integer_x: bool = False,
    markers: bool = True,
    diagonal: bool = False,
) -> Chart:
    """The geometry of ``series`` drawn as lines over shared axes. A domain not given
    is fitted to the data (rounded out to ticks); ``integer_x`` keeps x ticks whole
    (epochs, trees); ``diagonal`` draws the y = x chance line of a ROC chart."""
    xs = [x for s in series for x, _ in s.values]
    ys = [y for s in series for _, y in s.values]
    if x_domain is None:
        x_low, x_high, x_step = _domain(xs, integer_x)
    else:
        x_low, x_high = x_domain
        x_step = _nice_step(x_high - x_low)
    if y_domain is None:
        y_low, y_high, y_step = _domain(ys, False)
    else:
        y_low, y_high = y_domain
        y_step = _nice_step(y_high - y_low)

    frame = Chart(
        chart_id,
        title,
        description,
        x_label,
        y_label,
        (),
        (),
        (),
        x_domain=(x_low, x_high),
        y_domain=(y_low, y_high),
        markers=markers,
        diagonal=diagonal,
    )
    lines = tuple(
        Line(
            s.name,
            f"series-{k}",
            tuple((float(x), float(y)) for x, y in s.values),
            tuple((frame.px(x), frame.py(y)) for x, y in s.values),
        )
        for k, s in enumerate(series)
    )
    return replace(
        frame,
        lines=lines,
        x_ticks=tuple((frame.px(v), _label(v, x_step)) for v in _ticks(x_low, x_high, x_step)),
        y_ticks=tuple((frame.py(v), _label(v, y_step)) for v in _ticks(y_low, y_high, y_step)),
    )


def _groups(labels: Sequence[int], scores: Sequence[float]) -> list[tuple[int, int]]:
    """(defaults, non-defaults) per distinct score, highest score first: a threshold
    falls between scores, never inside a tie."""
    order = sorted(range(len(scores)), key=lambda k: -scores[k])
    groups: list[tuple[int, int]] = []
    previous: float | None = None
    for k in order:
        bad = 1 if labels[k] == 1 else 0
        if previous is not None and scores[k] == previous:
            b, g = groups[-1]
            groups[-1] = (b + bad, g + 1 - bad)
        else:
            groups.append((bad, 1 - bad))
        previous = scores[k]
    return groups


def roc_points(labels: Sequence[int], scores: Sequence[float]) -> list[Point]:
    """(false positive rate, true positive rate) at every threshold, from (0, 0) to
    (1, 1), scoring ``1`` (default) as the positive class; [] without both classes."""
    positives = sum(1 for y in labels if y == 1)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return []
    points: list[Point] = [(0.0, 0.0)]
    tp = fp = 0
    for bad, good in _groups(labels, scores):
        tp += bad
        fp += good
        points.append((fp / negatives, tp / positives))
    return points


@dataclass(frozen=True, slots=True)
class KsCurve:
    """Cumulative shares of defaults and non-defaults over the population sorted by
    score (highest first): KS is their widest gap, reached at ``at``."""

    defaults: list[Point]
    others: list[Point]
    ks: float
    at: float


def ks_curve(labels: Sequence[int], scores: Sequence[float]) -> KsCurve | None:
    """The KS curves of a test split; None without both classes. Row by row in the
    order ``federated.ks`` takes them (highest score first, ties in their given order),
    so the widest gap drawn is the published KS even when tree margins tie."""
    positives = sum(1 for y in labels if y == 1)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    defaults: list[Point] = [(0.0, 0.0)]
    others: list[Point] = [(0.0, 0.0)]
    bad = good = 0
    best, at = 0.0, 0.0
    for count, k in enumerate(sorted(range(len(scores)), key=lambda k: -scores[k]), start=1):
        bad += 1 if labels[k] == 1 else 0
        good += 0 if labels[k] == 1 else 1
        share = count / len(labels)
        defaults.append((share, bad / positives))
        others.append((share, good / negatives))
        gap = abs(bad / positives - good / negatives)
        if gap > best:
            best, at = gap, share
    return KsCurve(defaults, others, best, at)


def thin(
    points: Sequence[Point], most: int = MOST_POINTS, keep: float | None = None
) -> list[Point]:
    """At most ``most`` of ``points``, evenly spaced, the first and last kept (and the
    point at x = ``keep``, so a KS gap still lands on a drawn point)."""
    if len(points) <= most:
        return list(points)
    picked = {round(k * (len(points) - 1) / (most - 1)) for k in range(most)}
    if keep is not None:
        picked |= {k for k, (x, _) in enumerate(points) if x == keep}
    return [points[k] for k in sorted(picked)]
