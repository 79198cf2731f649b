"""The report's figures never misplace a point: each figure is drawn from a hand-made search with completed,
ASHA-stopped (values far below the rest) and errored trials, and what matplotlib holds after drawing (the
points' positions, their colours, the axis ranges, the titles) is checked against the trials' values."""

import math
import re

import numpy as np
import pytest
from helpers.report_search import SPACE, _search

from mtlsearch import report
from mtlsearch.report import figures, importance, page, param_figures, trials
from mtlsearch.report import scale as report_scale
from mtlsearch.report.render import table_columns, totals
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED, STATUS_STOPPED


@pytest.fixture
def drawn(monkeypatch):
    """Every figure ``figures`` and ``param_figures`` save, by file name, still open (saved as usual afterwards)."""
    kept = {}
    save = report_scale.save_figure

    def keep(fig, path):
        fig.canvas.draw()
        kept[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(figures, "save_figure", keep)
    monkeypatch.setattr(param_figures, "save_figure", keep)
    monkeypatch.setattr(report_scale.pyplot(), "close", lambda fig=None: None)
    yield kept
    import matplotlib.pyplot as plt

    for fig in kept.values():
        plt.close(fig)


def _far_search():
    """16 trials; the stopped ones' partial values lie far below the completed ones (as epoch-3 values do)."""
    search = _search()
    for i, t in enumerate(search.trials):
        if t.status == STATUS_STOPPED:
            t.final["val/delta_m"] = -70.0 - i
    return search


def _points(ax):
    """(x, y) of every scatter point on ``ax``."""
    out = []
    for coll in ax.collections:
        offsets = coll.get_offsets()
        out += [(float(x), float(y)) for x, y in np.asarray(offsets)]
    return out


def _titles_fit(fig):
    renderer = fig.canvas.get_renderer()
    width = fig.bbox.width
    for ax in fig.axes:
        for text in (ax.title, ax._left_title, ax._right_title):
            if text.get_text():
                assert text.get_window_extent(renderer).width <= width + 1, text.get_text()
    if fig._suptitle is not None:
        assert fig._suptitle.get_window_extent(renderer).width <= width + 1


def test_scale_keeps_every_value_in_order_and_never_clips():
    search = _far_search()
    scale = report_scale.value_scale(search)
    done = [t.final["val/delta_m"] for t in search.trials if t.status == STATUS_COMPLETED]
    values = sorted(t.final["val/delta_m"] for t in search.trials if t.status != STATUS_ERRORED)
    assert (scale.lo, scale.hi) == (min(done), max(done)) and scale.below and not scale.above
    assert (scale.vmin, scale.vmax) == (values[0], values[-1])
    colours = [float(scale.colour_position(v)) for v in values]
    positions = [scale.axis_position(v) for v in values]
    distinct = sorted(set(values))
    assert [float(scale.colour_position(v)) for v in distinct] == sorted({float(scale.colour_position(v)) for v in distinct})
    assert len({float(scale.colour_position(v)) for v in distinct}) == len(distinct)  # no two values share a colour
    assert colours == sorted(colours) and positions == sorted(positions)
    for v, pos in zip(values, positions):
        if v >= scale.lo:
            assert scale.lo + pos * (scale.hi - scale.lo) == pytest.approx(v)
        else:
            assert -0.16 - 1e-9 <= pos <= -0.04 + 1e-9  # the band below the axis, not the axis' end
    assert float(scale.colour_value(scale.colour_position(values[0]))) == pytest.approx(values[0])


def test_delta_scatters_draw_every_value_in_a_panel_that_holds_it(tmp_path, drawn):
    search = _far_search()
    path = figures.fig_delta_vs_param(search, tmp_path, "lr", log=True, filename="delta_m_vs_lr.png")
    assert path.is_file()
    fig = drawn["delta_m_vs_lr.png"]
    panels = [ax for ax in fig.axes if ax.collections]
    assert len(panels) == 2  # the main range and, on a broken axis, the stopped trials far below it
    plotted = []
    for ax in panels:
        lo, hi = ax.get_ylim()
        for x, y in _points(ax):
            assert lo <= y <= hi
            plotted.append((x, y))
    expected = sorted((t.params["lr"], t.final["val/delta_m"]) for t in search.trials if t.status != STATUS_ERRORED)
    assert np.allclose(np.array(sorted(plotted)), np.array(expected))
    main = max(panels, key=lambda ax: ax.get_position().height)
    done = [t.final["val/delta_m"] for t in search.trials if t.status == STATUS_COMPLETED]
    assert main.get_ylim()[0] > -70 and main.get_ylim()[0] <= min(done)  # not squashed by the -70s
    _titles_fit(fig)

    figures.fig_delta_by_method(search, tmp_path)
    fig = drawn["delta_m_by_method.png"]
    plotted = sorted(y for ax in fig.axes for _, y in _points(ax))
    assert plotted == pytest.approx(sorted(t.final["val/delta_m"] for t in search.trials if t.status != STATUS_ERRORED))
    title = fig.axes[0].get_title()
    assert "hollow: stopped early" in title.replace("\n", " ")  # whole, not cut
    _titles_fit(fig)


def test_joint_figure_colours_each_point_by_its_own_value_with_a_colour_bar(tmp_path, drawn):
    search = _far_search()
    searched = trials.searched_params(search, SPACE)
    data = param_figures.joint_data(search, searched)
    param_figures.fig_joint(data, tmp_path)
    fig = drawn["joint_params.png"]
    ax, bar = fig.axes[0], fig.axes[1]  # the plot and its colour bar
    scale = data["scale"]
    cmap = report_scale.pyplot().get_cmap("viridis")
    norm = scale.norm()
    by_xy = {(round(t.params["lr"], 12), round(t.params["p"], 12)): t for t in search.trials}
    seen = 0
    for coll in ax.collections:
        face, edge = coll.get_facecolors(), coll.get_edgecolors()
        for k, (x, y) in enumerate(np.asarray(coll.get_offsets())):
            t = by_xy[(round(float(x), 12), round(float(y), 12))]
            seen += 1
            if t.status == STATUS_ERRORED:
                continue
            colour = face[k] if t.status == STATUS_COMPLETED else edge[k % len(edge)]
            assert np.allclose(colour[:3], cmap(norm(t.final["val/delta_m"]))[:3], atol=1e-6), t.trial_id
    assert seen == len(search.trials)
    # Not clipped to the end colour: each stopped value has its own place on the colour map (up to the map's 256
    # entries) and only the lowest sits at its end.
    stopped = sorted(t.final["val/delta_m"] for t in search.trials if t.status == STATUS_STOPPED)
    places = [float(norm(v)) for v in stopped]
    assert places == sorted(places) and len(set(places)) == len(stopped) and places.count(0.0) == 1
    assert len({tuple(np.round(cmap(norm(v))[:3], 6)) for v in stopped}) > len(stopped) // 2
    ticks = [float(v) for v in bar.get_yticks()]
    assert min(ticks) == pytest.approx(scale.vmin) and max(ticks) == pytest.approx(scale.vmax)
    _titles_fit(fig)


def test_parallel_coordinates_put_out_of_range_values_in_a_labelled_band_with_a_colour_bar(tmp_path, drawn):
    search = _far_search()
    searched = trials.searched_params(search, SPACE)
    data = param_figures.parallel_data(search, searched)
    scale = data["scale"]
    by_id = {t.trial_id: t for t in search.trials}
    pairs = sorted((by_id[ln["trial"]].final["val/delta_m"], ln["objective"]) for ln in data["lines"] if ln["objective"] is not None)
    assert [p for _, p in pairs] == sorted(p for _, p in pairs)  # the axis keeps the values' order
    below = [v for v in (by_id[ln["trial"]].final["val/delta_m"] for ln in data["lines"] if ln["objective"] is not None) if v < scale.lo]
    assert len(below) == sum(t.status == STATUS_STOPPED for t in search.trials) and all(p < 0 for v, p in pairs if v < scale.lo)
    assert all(ln["objective"] is None for ln in data["lines"] if by_id[ln["trial"]].status == STATUS_ERRORED)
    param_figures.fig_parallel(data, tmp_path)
    fig = drawn["parallel_coordinates.png"]
    assert len(fig.axes) == 2  # the colour bar
    labels = [t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("below the scale")]
    assert labels == [f"below the scale:\n{min(below):.3g} .. {max(below):.3g} ({len(below)})"]
    _titles_fit(fig)


def test_pareto_legend_names_the_pair_front_and_the_all_metric_set(tmp_path, drawn):
    search = _far_search()
    for i, t in enumerate(search.trials):
        t.final["val/left/accuracy"] = 0.5 + 0.03 * ((i * 7) % 11)
        t.final["val/number/mae"] = 1.0 + 0.1 * ((i * 5) % 13)
    figures.fig_pareto(search, tmp_path)
    fig = drawn["pareto.png"]
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "this pair's 2-D front" in legend or all(len(ax.lines) == 0 for ax in fig.axes)
    assert any(text.startswith("not dominated over all") for text in legend) and "dominated on every metric" in legend
    _titles_fit(fig)


def test_html_trials_table_is_sorted_sortable_and_links_each_run(tmp_path):
    search = _far_search()
    search.tracking_uri, search.experiment_id = "http://127.0.0.1:5999", "7"
    for t in search.trials:
        t.run_id = f"run{t.trial_id}"
    searched = trials.searched_params(search, SPACE)
    result = importance.param_importance(search, searched)
    html = page.build_page(search, [], [search.metric], result, searched, [])
    body = html.split("<h2>Trials (16)</h2>", 1)[1]
    ids = re.findall(r'<tr><td><a href="http://127\.0\.0\.1:5999/#/experiments/7/runs/run(t\d\d)">', body)
    assert len(ids) == len(search.trials)
    status = {t.trial_id: t.status for t in search.trials}
    value = {t.trial_id: t.final["val/delta_m"] for t in search.trials}
    kinds = [status[i] for i in ids]
    assert kinds == sorted(kinds, key=[STATUS_COMPLETED, STATUS_STOPPED, STATUS_ERRORED].index)
    done = [value[i] for i in ids if status[i] == STATUS_COMPLETED]
    assert done == sorted(done, reverse=True)  # mode max: best first
    assert 'class="sortable"' in body and "<script>" in html and "<script src" not in html
    assert not re.search(r'src\s*=\s*"(?!data:)', html)
    assert set(re.findall(r'href="([^"]+)"', html)) == {
        f"http://127.0.0.1:5999/#/experiments/7/runs/run{t.trial_id}" for t in search.trials
    }


def test_cost_columns_only_for_the_resources_used():
    search = _far_search()
    assert "GPU-h" not in table_columns(search, [search.metric]) and "CPU-h" in table_columns(search, [search.metric])
    assert "GPU-hours" not in totals(search) and "CPU-hours" in totals(search)
    search.gpus_per_trial = 0.5
    assert "GPU-h" in table_columns(search, [search.metric]) and "GPU-hours" in totals(search)
    assert not math.isnan(search.gpus_per_trial)


TILT = """
from mtlsearch.balancing import HParam, LossBalancing, Range


class Tilt(LossBalancing):
    tilt = HParam(0.0, Range(ge=-1, le=1), "lean towards the easiest (< 0) or the hardest task", buckets=(0,))

    def forward(self, losses):
        return losses.sum()
"""


def test_the_report_takes_names_buckets_and_owners_from_the_space_and_the_methods(tmp_path, drawn):
    """A user's method with a bucketed hyperparameter, against ew, with the weight decay searched and lr
    fixed: every name the report shows comes from the space and the method's declaration."""
    (tmp_path / "tilt.py").write_text(TILT)
    tilt = f"{tmp_path / 'tilt.py'}:Tilt"
    space = (
        SPACE.replace("method: gemtl", f"method: {{choice: ['{tilt}', ew]}}")
        .replace("p: {uniform: [-2.0, 4.0]}", f"tilt: {{uniform: [-1.0, 1.0], when: {{method: '{tilt}'}}}}")
        .replace("lr: {loguniform: [3.0e-4, 3.0e-2]}", "weight_decay: {loguniform: [1.0e-6, 1.0e-3]}\n  lr: 0.001")
        .replace("# --set params.p.uniform=[-2.0, 3.0]", "")
    )
    search = _far_search()
    n = len(search.trials)
    for i, t in enumerate(search.trials):
        t.params.pop("p")
        t.params.update(method=tilt if i % 2 else "ew", lr=0.001, weight_decay=1e-6 * 1000 ** (i / (n - 1)))
        if i % 2:
            t.params["tilt"] = -1.0 + 2.0 * ((i * 3) % n) / (n - 1)
    searched = trials.searched_params(search, space)
    assert [p.name for p in searched] == ["method", "tilt", "weight_decay"]

    rows, metrics = report.leaderboard(search)
    assert "tilt bucket" in table_columns(search, metrics) and "p bucket" not in table_columns(search, metrics)
    expected = {(tilt, "tilt<0" if t.params["tilt"] < 0 else "tilt>=0") for t in search.trials if "tilt" in t.params}
    assert {(r["method"], r["tilt bucket"]) for r in rows} == {("ew", "")} | expected and len(expected) == 2

    names = {p.name for p in figures.make_figures(search, rows, tmp_path, searched)}
    assert {"delta_m_vs_tilt.png", "delta_m_vs_weight_decay.png"} <= names and not {"delta_m_vs_lr.png", "delta_m_vs_p.png"} & names
    fig = drawn["delta_m_vs_tilt.png"]
    top = max(fig.axes, key=lambda ax: bool(ax.get_title()))
    assert top.get_title().startswith("Tilt: val/delta_m against tilt")
    assert [t.get_text() for t in top.texts if t.get_text().startswith("tilt")] == ["tilt<0", "tilt>=0"]
    xs = sorted(x for ax in fig.axes for x, _ in _points(ax))
    assert xs == pytest.approx(sorted(t.params["tilt"] for t in search.trials if "tilt" in t.params and t.status != STATUS_ERRORED))

    result = importance.Importance(params=["tilt", "weight_decay"], values={"fANOVA": {"weight_decay": 0.9, "tilt": 0.1}})
    data = param_figures.joint_data(search, searched, result)
    assert (data["x"].name, data["y"].name, data["y_buckets"]) == ("weight_decay", "tilt", (0,))
    assert page.caption("delta_m_vs_tilt.png", search, searched, result) == "Δm against Tilt's tilt"
    assert page.caption("delta_m_vs_weight_decay.png", search, searched, result) == "Δm against the weight decay"
    assert "(tilt x weight_decay)" in page.caption("joint_params.png", search, searched, result)


def test_importance_does_not_depend_on_the_order_or_the_ids_the_store_gives_the_trials():
    """Two runs of one search list the same trials under other (random) ids, in another order."""
    import copy

    search = _search()
    searched = trials.searched_params(search, SPACE)
    first = importance.param_importance(search, searched)
    again = copy.deepcopy(search)
    again.trials = list(reversed(again.trials))
    for i, t in enumerate(again.trials):
        t.trial_id = f"other{i:02d}"
    second = importance.param_importance(again, searched)
    assert first.values and first.spread  # computed, with its bootstrap spread
    assert second.values == first.values and second.spread == first.spread
