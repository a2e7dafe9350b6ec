"""The console's chart geometry: data land on the right pixels, axes cover the data,
empty and one-point charts draw sensibly, and ROC/KS curves agree with the metrics the
SDK publishes."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from creditshare.console._charts import (
    BOTTOM,
    LEFT,
    RIGHT,
    TOP,
    Chart,
    Series,
    ks_curve,
    line_chart,
    roc_points,
    thin,
)
from creditshare.federated import auc, ks


def chart(*series: Series, **options: Any) -> Chart:
    return line_chart("c", "title", "desc", "epoch", "loss", list(series), **options)


def test_points_map_onto_the_plot_area_by_their_domain() -> None:
    drawn = chart(
        Series("loss", [(0, 0.0), (5, 0.5), (10, 1.0)]), x_domain=(0, 10), y_domain=(0, 1)
    )
    (line,) = drawn.lines
    assert line.points == (
        (LEFT, BOTTOM),
        ((LEFT + RIGHT) / 2, (TOP + BOTTOM) / 2),
        (RIGHT, TOP),
    )
    middle = f"{(LEFT + RIGHT) / 2:.1f},{(TOP + BOTTOM) / 2:.1f}"
    assert line.path == f"M{LEFT:.1f},{BOTTOM:.1f} L{middle} L{RIGHT:.1f},{TOP:.1f}"
    # Higher values are drawn higher: SVG rows grow downwards.
    assert drawn.py(0.9) < drawn.py(0.1)


def test_fitted_axes_cover_the_data_with_round_ticks_in_order() -> None:
    drawn = chart(Series("loss", [(1, 0.693), (2, 0.61), (3, 0.584)]), integer_x=True)
    low, high = drawn.y_domain
    assert low <= 0.584 and high >= 0.693
    for line in drawn.lines:
        for x, y in line.points:
            assert LEFT <= x <= RIGHT and TOP <= y <= BOTTOM
    x_labels = [label for _, label in drawn.x_ticks]
    assert x_labels == [str(int(float(v))) for v in x_labels]  # whole epochs only
    assert "1" in x_labels and "3" in x_labels
    x_pixels = [p for p, _ in drawn.x_ticks]
    y_pixels = [p for p, _ in drawn.y_ticks]
    assert x_pixels == sorted(x_pixels) and x_pixels[0] == LEFT and x_pixels[-1] == RIGHT
    assert y_pixels == sorted(y_pixels, reverse=True)
    assert y_pixels[0] == BOTTOM and y_pixels[-1] == pytest.approx(TOP)
    # Each y tick sits where its value maps.
    for pixel, label in drawn.y_ticks:
        assert drawn.py(float(label)) == pytest.approx(pixel, abs=0.6)


def test_an_empty_chart_has_axes_and_no_points() -> None:
    drawn = chart(Series("loss", []))
    assert drawn.empty
    assert drawn.lines[0].points == () and drawn.lines[0].path == ""
    assert len(drawn.x_ticks) >= 2 and len(drawn.y_ticks) >= 2
    assert drawn.table_rows == []


def test_one_point_is_drawn_inside_the_plot_not_on_its_edge() -> None:
    drawn = chart(Series("loss", [(1, 0.69)]), integer_x=True)
    ((x, y),) = drawn.lines[0].points
    assert LEFT < x < RIGHT and TOP < y < BOTTOM
    assert drawn.lines[0].path == f"M{x:.1f},{y:.1f}"
    assert drawn.table_rows == [["1", "0.6900"]]


def test_data_table_lists_every_x_with_each_curves_value() -> None:
    drawn = chart(Series("loss", [(1, 0.7), (2, 0.6)]), Series("auc", [(2, 0.8)]), integer_x=True)
    assert drawn.table_headers == ["epoch", "loss", "auc"]
    assert drawn.table_rows == [["1", "0.7000", "–"], ["2", "0.6000", "0.8000"]]
    assert [line.css for line in drawn.lines] == ["series-0", "series-1"]


def test_data_table_keeps_every_step_of_a_curve_that_repeats_an_x() -> None:
    steps = [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
    drawn = chart(Series("roc", steps), x_domain=(0, 1), y_domain=(0, 1))
    assert [[float(c) for c in row] for row in drawn.table_rows] == [list(p) for p in steps]
    # Two curves over the same x values (KS): one row per point, both curves' values.
    both = chart(Series("a", [(0, 0), (0.5, 0.8)]), Series("b", [(0, 0), (0.5, 0.3)]))
    assert both.table_rows == [
        ["0.0000", "0.0000", "0.0000"],
        ["0.5000", "0.8000", "0.3000"],
    ]


def test_a_mark_is_a_vertical_segment_at_its_value() -> None:
    drawn = chart(Series("s", [(0, 0), (1, 1)]), x_domain=(0, 1), y_domain=(0, 1))
    (mark,) = drawn.marked(0.25, 0.1, 0.6, "KS").marks
    assert mark.x1 == mark.x2 == drawn.px(0.25) == LEFT + (RIGHT - LEFT) / 4
    assert (mark.y1, mark.y2) == (drawn.py(0.1), drawn.py(0.6))


def _sample(n: int = 300) -> tuple[list[int], list[float]]:
    rng = np.random.default_rng(7)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = rng.normal(size=n) + labels * 1.2
    return [int(v) for v in labels], [float(v) for v in scores]


def test_roc_runs_from_origin_to_corner_and_its_area_is_the_auc() -> None:
    labels, scores = _sample()
    points = roc_points(labels, scores)
    assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(points))
    xs, ys = np.array(points).T
    assert float(np.trapezoid(ys, xs)) == pytest.approx(auc(np.array(labels), np.array(scores)))


def test_roc_groups_tied_scores_into_one_step() -> None:
    assert roc_points([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]) == [
        (0.0, 0.0),
        (0.0, 0.5),
        (0.5, 1.0),
        (1.0, 1.0),
    ]


def test_ks_curve_gap_is_the_published_ks() -> None:
    labels, scores = _sample()
    curve = ks_curve(labels, scores)
    assert curve is not None
    assert curve.ks == pytest.approx(ks(np.array(labels), np.array(scores)))
    assert curve.defaults[-1] == (1.0, 1.0) and curve.others[-1] == (1.0, 1.0)
    gap = {x: y for x, y in curve.defaults}[curve.at] - {x: y for x, y in curve.others}[curve.at]
    assert abs(gap) == pytest.approx(curve.ks)


def test_ks_curve_is_the_published_ks_when_scores_tie() -> None:
    # Tree margins take few values: many rows tie.
    labels, scores = _sample()
    tied = [round(v) / 2 for v in scores]
    curve = ks_curve(labels, tied)
    assert curve is not None
    assert curve.ks == pytest.approx(ks(np.array(labels), np.array(tied)))


def test_one_class_gives_no_curve() -> None:
    assert roc_points([1, 1, 1], [0.1, 0.2, 0.3]) == []
    assert ks_curve([0, 0], [0.1, 0.2]) is None


def test_thinning_keeps_ends_and_the_named_point() -> None:
    points = [(k / 999, k / 999) for k in range(1000)]
    kept = thin(points, most=50, keep=points[501][0])
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert points[501] in kept and len(kept) <= 51
    assert kept == sorted(kept)
    assert thin(points[:10], most=50) == points[:10]
