"""Chart geometry from given numbers, worked by hand: ticks, forest positions, shading, lines and bars."""

from __future__ import annotations

import pytest

from allwen.report import charts


def test_nice_ticks_are_round_steps_covering_the_range():
    assert charts.nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert charts.nice_ticks(0.91, 0.99, 4) == [0.92, 0.94, 0.96, 0.98]
    assert charts.nice_ticks(0.5, 0.5)  # an empty range still gets a tick


def test_forest_places_values_and_intervals_on_each_panel():
    rows = [charts.ForestRow("best", "best single", {"acc": (0.8, 0.7, 0.9)}),
            charts.ForestRow("other", "single", {"acc": (None, None, None)})]
    chart = charts.forest(rows, [("acc", "test accuracy")], reference=0.8, width=600)
    panel = chart.panels[0]
    assert (panel.lo, panel.hi) == pytest.approx((0.69, 0.91))  # data range 0.7-0.9, padded by 0.01
    mark, = panel.marks  # no mark for the undefined value
    assert mark["x"] == pytest.approx(panel.x0 + panel.width / 2) and mark["x"] == panel.reference
    assert mark["x_lo"] == pytest.approx(panel.x(0.7)) and mark["title"] == "best: 0.800 [0.700, 0.900]"
    assert mark["y"] == chart.top + 0.5 * chart.row_height and mark["colour"] == charts.COLOURS["best single"]
    assert [label["bold"] for label in chart.labels] == [True, False]
    assert [name for name, _, _ in chart.legend] == ["best single", "single"]


def test_confusion_cells_shade_by_the_true_class_share():
    (a, b), (c, d) = charts.confusion_view([[3, 1], [0, 0]], ["hem", "all"])
    assert (a["count"], a["rate"], b["rate"]) == (3, 0.75, 0.25) and c["rate"] == d["rate"] == 0.0
    assert charts.shade(0.0) == "rgb(255,255,255)" and charts.shade(1.0) == "rgb(29,78,216)"
    assert a["fg"] == "#fff" and b["fg"] == "#1f2937"  # white text on a dark cell only


def test_lines_leave_gaps_and_bars_stand_on_the_axis():
    chart = charts.lines("acc", [1, 2, 3], [("val", [0.5, None, 0.7])], "epochs", "acc")
    assert chart.kind == "lines" and len(chart.series[0]["marks"]) == 2  # None: no point
    (x1, y1, _), (x3, y3, _) = chart.series[0]["marks"]
    assert x3 - x1 == pytest.approx(2 * chart.plot_w / 3) and y3 < y1  # higher value, higher up
    bars = charts.bars("acc", ["a", "b"], [("train", [0.5, 0.7]), ("val", [0.6, 0.8])], "x", "acc")
    assert bars.kind == "bars"
    base = bars.top + bars.plot_h
    for entry in bars.series:
        assert all(y + h == pytest.approx(base) for _, y, _, h, _ in entry["bars"])
    (left, *_), (right, *_) = bars.series[0]["bars"][0], bars.series[1]["bars"][0]
    assert right > left  # the second series beside the first, not on top of it
