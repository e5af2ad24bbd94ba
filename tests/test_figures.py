"""Every plotly figure the dashboard draws is legible on a projector: each page is run under AppTest on the bundled
ResNet-20 (with runs and jobs written by hand for the Compare and Jobs pages, every tour step's figure under "Show
all steps") and the figures it sends to the browser are read back; the figures no default page view draws
(sensitivity curves, reliability bars, a tile grid with removed filters) come from their builders. Every tick label,
axis title, subplot title, legend, colour bar and cell text is at least 12 px, and every x / y axis that shows data
with tick labels has a title (its own; in a grid of small multiples its row's or column's, or the grid's)."""
import base64
import json
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from pages.ui.figures import agreement_bars, grid_figure, sensitivity_figure
from prunekit import load_checkpoint
from prunekit.models.checkpoints import DEFAULT_CHECKPOINT
from prunekit.pruning.structure import structure
from tests.apptest_kit import open_page
from tests.conftest import REPO, cifar_root
from tests.sample_runs import write_jobs, write_runs

MIN_PX = 12
PAGES = {  # page -> its session state (l1: weight-only, scored at once; 64 probe images)
    "pages/model.py": {},
    "pages/saliency.py": {"criterion": "l1", "probe_n": 64},
    "pages/feature_maps.py": {"criterion": "l1", "probe_n": 64, "fm_layer": "layer3.0.conv1"},
    "pages/correlations.py": {"criterion": "l1", "probe_n": 64, "corr_layer": "layer1.0.conv1"},
    "pages/plan.py": {"criterion": "l1"},
    "pages/jobs.py": {},
    "pages/compare.py": {},
    "pages/tour.py": {},
}
AXIS = re.compile(r"^([xy])axis(\d*)$")


def _size(font: dict | None, layout: dict) -> float | None:
    """A text's size in px: its own font's, else the figure's (layout.font), None when neither is set."""
    return (font or {}).get("size") or (layout.get("font") or {}).get("size")


def _shared_titles(layout: dict) -> set[str]:
    """'x' / 'y' when the figure titles a grid of panels as a whole (make_subplots' x_title under the plots,
    y_title turned -90 left of them)."""
    shared = set()
    for a in layout.get("annotations", []):
        if a.get("yref") == "paper" and a.get("yanchor") == "top" and (a.get("y") or 0) <= 0 and a.get("text"):
            shared.add("x")
        if a.get("textangle") == -90 and (a.get("x") or 0) <= 0 and a.get("text"):
            shared.add("y")
    return shared


def _text_sizes(spec: dict) -> list[tuple[str, float | None]]:
    """(what, px) of every text of a figure's JSON: axes' ticks and titles, annotations, the title, the legend,
    colour bars and cell text."""
    layout = spec.get("layout", {})
    sizes = [("the figure's text", _size(None, layout)), ("the legend", _size(layout.get("legend", {}).get("font"),
                                                                              layout))]
    if (layout.get("title") or {}).get("text"):
        sizes.append(("the title", _size(layout["title"].get("font"), layout)))
    for key, axis in layout.items():
        if AXIS.match(key):
            sizes.append((f"{key}'s tick labels", _size(axis.get("tickfont"), layout)))
            if (axis.get("title") or {}).get("text"):
                sizes.append((f"{key}'s title", _size(axis["title"].get("font"), layout)))
    for a in layout.get("annotations", []):
        sizes.append((f"annotation {a.get('text')!r}", _size(a.get("font"), layout)))
    bars = [t.get("colorbar") for t in spec.get("data", [])] + [(t.get("marker") or {}).get("colorbar")
                                                               for t in spec.get("data", [])]
    bars += [v.get("colorbar") for k, v in layout.items() if k.startswith("coloraxis")]
    for bar in filter(None, bars):
        sizes.append(("a colour bar's ticks", _size(bar.get("tickfont"), layout)))
    for t in spec.get("data", []):
        if t.get("texttemplate") or t.get("text") is not None and t.get("type") == "heatmap":
            sizes.append((f"{t.get('type')}'s cell text", _size(t.get("textfont"), layout)))
    return sizes


def _untitled_axes(spec: dict) -> list[str]:
    """The x / y axes that show a trace's data with tick labels and have no title: neither their own, nor their
    row's (a y axis) or column's (an x axis) in a grid of panels (another axis of that letter and domain titled),
    nor the grid's."""
    layout, shared = spec.get("layout", {}), _shared_titles(spec.get("layout", {}))
    used = {f"{letter}axis{t.get(f'{letter}axis', letter)[1:]}" for t in spec.get("data", []) for letter in "xy"
            if t.get("type") not in ("pie", "image")}
    titled = {(k[0], tuple(a.get("domain", (0, 1)))) for k, a in layout.items()
              if AXIS.match(k) and (a.get("title") or {}).get("text")}
    missing = []
    for key in sorted(used):
        axis = layout.get(key, {})
        if axis.get("visible") is False or axis.get("showticklabels") is False or key[0] in shared:
            continue
        if (key[0], tuple(axis.get("domain", (0, 1)))) not in titled:
            missing.append(key)
    return missing


def problems(spec: dict) -> list[str]:
    """What makes a figure (its JSON, as sent to the browser) hard to read on a projector, in words."""
    found = [f"{what} at {px} px" if px else f"{what} has no size (plotly's default, 12 px in Streamlit's theme, "
             "but not set by pages.ui.figures.legible)" for what, px in _text_sizes(spec) if not px or px < MIN_PX]
    return found + [f"{key} shows data without a title" for key in _untitled_axes(spec)]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> dict[str, list[dict]]:
    """page -> the JSON of every plotly chart it draws; and the Jobs page's finished table under 'jobs table'."""
    work = tmp_path_factory.mktemp("figures")
    tuned = write_runs(work / "runs")[0]
    write_jobs(work / "jobs", work)
    env = {"PRUNEKIT_RUNS": str(work / "runs"), "PRUNEKIT_JOBS": str(work / "jobs"), "PRUNEKIT_JOBS_NO_WORKER": "1"}
    if cifar_root() is not None:
        env["PRUNEKIT_DATA"] = str(cifar_root())
    charts = {}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for page, session in PAGES.items():
            at = open_page(page, **session, **({"compare_run": tuned} if page == "pages/compare.py" else {}))
            assert not at.exception, (page, at.exception)
            charts[page] = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
            if page == "pages/jobs.py":
                charts["jobs table"] = at.dataframe[0].value
    return charts


@pytest.mark.parametrize("page", list(PAGES))
def test_every_chart_a_page_draws_is_legible_and_titled(drawn, page):
    assert drawn[page], f"{page} drew no chart"
    found = {k: p for k, spec in enumerate(drawn[page]) if (p := problems(spec))}
    assert not found, f"{page}: " + json.dumps(found, indent=1)


def test_the_walk_draws_every_kind_of_chart(drawn):
    # the tour draws its 8 steps under "Show all steps" (and the current one); Compare its scatter, channels and
    # fine-tuning; Saliency its distributions, one layer (two), agreement (two) and stability
    counts = {page: len(charts) for page, charts in drawn.items() if page in PAGES}
    assert counts["pages/tour.py"] >= (9 if cifar_root() else 7), counts
    assert counts["pages/compare.py"] == 3 and counts["pages/saliency.py"] >= 6, counts
    assert counts["pages/jobs.py"] >= 1, counts


def test_the_jobs_table_reads_local_minutes_not_utc_iso_stamps(drawn):
    finished = drawn["jobs table"]["finished"].tolist()
    assert finished and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d \S+", f) for f in finished), finished
    assert set(drawn["jobs table"]["took"]) == {"4 s", "6 min 35 s"}


def _xs(values) -> list[float]:
    """A trace's x values as sent to the browser: a list, or base64 bytes of a typed array."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values or [])


def test_every_epoch_axis_ticks_whole_epochs(drawn):
    # the Compare page's fine-tuning chart ticked "1 2 2 3 3" (plotly's half-epoch ticks, rounded by its format)
    found = {}
    for page in PAGES:
        for spec in drawn[page]:
            for key, axis in spec["layout"].items():
                if AXIS.match(key) and ((axis.get("title") or {}).get("text") or "") == "epoch":
                    ref = "x" + AXIS.match(key)[2]
                    last = max(x for t in spec["data"] if t.get("xaxis", "x") == ref for x in _xs(t.get("x")))
                    found.setdefault(page, []).append((last, axis.get("tickmode"), axis.get("tick0"),
                                                       axis.get("dtick")))
    assert set(found) == {"pages/jobs.py", "pages/compare.py", "pages/tour.py"}, found  # Jobs, one run, step 7
    for page, axes in found.items():
        for last, mode, tick0, dtick in axes:
            assert mode == "linear" and tick0 == 0 and float(dtick).is_integer(), (page, axes)
            assert dtick == 1 if last <= 12 else last / dtick <= 12, (page, axes)  # every epoch, else <= 12 ticks
    assert {dtick for *_, dtick in found["pages/compare.py"] + found["pages/jobs.py"]} == {1}  # 3 epochs each


def test_the_tour_draws_the_pareto_front_and_the_unpruned_line_it_describes(drawn):
    step8 = next(c for c in drawn["pages/tour.py"]
                 if "FLOPs" in ((c["layout"].get("xaxis") or {}).get("title") or {}).get("text", ""))
    names = [t.get("name") for t in step8["data"]]
    assert names[0] == "Pareto front" and "sfm_entropy" in names, names
    lines = [(s["y0"], s["y1"]) for s in step8["layout"].get("shapes", []) if s.get("type") == "line"]
    e1 = json.loads((REPO / "experiments" / "out" / "e1_curves.json").read_text())
    assert (e1["accuracy_before"],) * 2 in lines  # the unpruned model's dotted line, at its accuracy


def test_a_tile_grid_labels_each_map_above_it_never_over_it():
    fig = grid_figure(torch.rand(16, 32, 32), list(range(16)), [f"#{i}" for i in range(16)], set())
    z = fig.data[0].z
    for note in fig.layout.annotations:
        above = int(round(note.y - 0.5))  # the row of pixels the label's bottom sits on, just above its tile
        assert note.yanchor == "bottom" and above >= 0 and np.isnan(z[above]).all(), note.text


def _builders() -> dict[str, go.Figure]:
    """The figures no default page view draws, from their builders on small inputs."""
    model = load_checkpoint(DEFAULT_CHECKPOINT)[0]
    struct = structure(model, (3, 32, 32))
    table = pd.DataFrame([{"group": g.root, "ratio": r, "accuracy": 88.0 - 60 * r, "kept": 8}
                          for g in struct.groups for r in (0.0, 0.5)])
    layers = pd.DataFrame({"layer": ["conv1", "layer1.0.conv1"], "spearman": [0.9, 0.4], "overlap": [0.8, 0.3]})
    return {"sensitivity": sensitivity_figure(table, struct),
            "reliability": agreement_bars(layers, "Spearman", "bottom-30% overlap", "agreement of two samples", 360),
            "grid, 64 tiles, removed ones": grid_figure(torch.rand(64, 8, 8), list(range(64)),
                                                        [f"#{i} 0.123 ✕" for i in range(64)], {0, 5})}


def test_the_builders_no_default_view_draws_are_legible_too():
    found = {name: p for name, fig in _builders().items() if (p := problems(json.loads(fig.to_json())))}
    assert not found, json.dumps(found, indent=1)


def test_the_check_catches_small_text_and_untitled_axes():
    fig = go.Figure(go.Bar(x=[1, 2], y=[3, 4]))
    fig.update_layout(font_size=14, xaxis_tickfont_size=9, yaxis_title="filters")
    assert problems(json.loads(fig.to_json())) == ["xaxis's tick labels at 9 px", "xaxis shows data without a title"]
    assert any("has no size" in p for p in problems(json.loads(go.Figure(go.Bar(x=[1], y=[1])).to_json())))

