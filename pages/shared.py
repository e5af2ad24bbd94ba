"""What every page shares: the sidebar (model, data, probe size, device), cached loaders, the scores of a
criterion, the current plan and number formatting.

Cached objects (st.cache_resource) are shared by every session: never prune or train them in place;
deep-copy first.

Session keys that pages share: ``CRITERION`` (the criterion chosen on the Saliency page, a registry name),
``PLAN`` (the plan being edited on the Plan page: {coupled group's root conv: ratio}), ``PLAN_ROUND_TO`` (its
rounding of kept filters), ``PROBE_N`` (probe images, set in the sidebar).
"""
from __future__ import annotations

import hashlib
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
import torch
from streamlit.runtime.pages_manager import PagesManager

from pages import started
from pages.model_source import SOURCES, data_problem, pick_source_model, source_options
from prunekit import CheckpointError, best_device, build_model, list_models, load_checkpoint, model_info
from prunekit.models.checkpoints import DEFAULT_CHECKPOINT
from prunekit.criteria import criterion_class
from prunekit.data import ArraySet, DataNotFoundError, data_root, held_out_set, list_datasets, load_arrays, locate
from prunekit.defaults import DEFAULT_CRITERION, FALLBACK_CRITERION, PROBE
from prunekit.errors import UserError
from prunekit.criteria.probe import Probe, ProbeSpec, make_probe
from prunekit.analysis.reliability import probe_reliability
from prunekit.criteria.scores import score_model, weights_hash
from prunekit.pruning.structure import Structure, structure

MAX_UPLOAD_MB = 200  # also server.maxUploadSize in .streamlit/config.toml
DEFAULT_SOURCE = "Bundled default: ResNet-20 on CIFAR-10"
REGISTRY_SOURCE = "A registered architecture (untrained)"
UPLOAD_SOURCE = "Upload a checkpoint (.pt, .pth, .safetensors)"
CRITERION, PLAN, PROBE_N = "criterion", "plan", "probe_n"
PLAN_ROUND_TO = "plan_round_to"  # the Plan page's rounding of kept filters (prunekit.pruning.ratios.kept_channels)
LONG_PLAN = 24  # coupled groups: a plan of more opens on the table rather than a slider per group
PROBE_SIZES = sorted({128, 256, PROBE.n, 2 * PROBE.n})


@dataclass
class Selection:
    """What the sidebar chose: a model (or why there is none), its checkpoint header and the data set."""

    model: torch.nn.Module | None
    arch: str | None
    header: dict
    label: str
    error: str | None
    dataset: str
    data_path: Path | None
    key: str = ""  # the weights' hash ("" without a model): the cache key of everything computed from the model
    probe_n: int = PROBE.n
    data_problem: str | None = None  # why the model cannot take the data set's images or labels (None: it can)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image."""
        return model_info(self.arch).input_size

    @property
    def probe_spec(self) -> ProbeSpec:
        """The probe set the data-driven criteria read (the sidebar's data set and size, the default seed)."""
        return ProbeSpec(self.dataset, self.probe_n)


@st.cache_resource(show_spinner="Loading the default model...")
def _default_model():
    return load_checkpoint(DEFAULT_CHECKPOINT)


@st.cache_resource(show_spinner="Building the model...")
def _registry_model(arch: str, num_classes: int):
    return build_model(arch, num_classes=num_classes).eval(), {}


@st.cache_resource(show_spinner="Loading the checkpoint...", max_entries=4)
def _uploaded_model(digest: str, name: str, data: bytes, arch: str | None):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(name).name
        path.write_bytes(data)
        return load_checkpoint(path, arch=arch)


@st.cache_data(show_spinner=False, max_entries=32)
def _weights_key(_model, label: str, model_id: int) -> str:
    return weights_hash(_model)


def found(load: Callable, *args):
    """``load(*args)``, or None when its data set's files are missing (DataNotFoundError). ``load`` is a cached
    function that raises on a miss: Streamlit caches no exception, so files put in place while the app runs (the
    Model & data page says how) are found at the next rerun, never hidden behind a cached None."""
    try:
        return load(*args)
    except DataNotFoundError:
        return None


@st.cache_resource(show_spinner="Loading the images...", max_entries=4)
def _split(dataset: str, which: str) -> ArraySet:
    return load_arrays(dataset, which)


def split(dataset: str, which: str) -> ArraySet | None:
    """The ``which`` split ("train" / "test") of ``dataset`` as uint8 arrays, None when its files are missing."""
    return found(_split, dataset, which)


@st.cache_resource(show_spinner="Loading the test images...", max_entries=8)
def _held_out(dataset: str, n: int) -> ArraySet:
    return held_out_set(dataset, n)


def held_out(sel: Selection, n: int) -> ArraySet | None:
    """``n`` held-out images of the selected data set (:func:`prunekit.data.held_out_set`, as the command line
    draws them), None without data or when the model cannot take them (the sidebar says why)."""
    return found(_held_out, sel.dataset, n) if sel.data_path is not None and not sel.data_problem else None


@st.cache_resource(show_spinner="Preparing the probe images...", max_entries=8)
def _probe(dataset: str, n: int, boxes: bool) -> Probe:
    return make_probe(dataset, n, boxes=boxes)


def probe(dataset: str, n: int, boxes: bool = False) -> Probe | None:
    """The probe the criteria read (:func:`prunekit.criteria.probe.make_probe`, as the command line and the jobs build it):
    ``n`` training images, or with ``boxes`` ``n`` objects of the same split on 64x64 canvases with their boxes;
    None without data."""
    return found(_probe, dataset, n, boxes)


@st.cache_resource(show_spinner="Tracing the model's coupled groups...", max_entries=8)
def _structure(_model, key: str, input_size: tuple) -> Structure:
    return structure(_model, input_size)


def structure_of(sel: Selection) -> Structure:
    """The selected model's prunable structure (groups, layer shapes), traced once per model for every page."""
    return _structure(sel.model, sel.key, sel.input_size)


_SCORES: OrderedDict[tuple, pd.DataFrame] = OrderedDict()  # this process's scores, newest last
_SCORES_LOCK = threading.Lock()
_SCORES_MAX = 64


def scores(sel: Selection, criterion: str, params: dict | None = None, progress=None, *,
           fallback: bool = True, allow_slow: bool = True) -> pd.DataFrame:
    """The per-filter scores of the selected model by ``criterion`` (columns layer, filter, criterion, score,
    rank; one row per filter of every conv), from this process's memory, else :func:`prunekit.criteria.scores.score_model`
    (the package's disk cache, else computed with ``progress(done, total)``). With ``fallback``, a criterion that
    cannot run here (no images, or slow and not ``allow_slow``) gives l1's scores, with the reason in
    ``attrs["fallback"]``; without, DataNotFoundError. UserError for bad parameters.

    (Not st.cache_data: that cannot replay a progress bar drawn from inside the computation.)"""
    request = _request(sel, criterion, params, fallback, allow_slow)
    with _SCORES_LOCK:
        if request in _SCORES:
            _SCORES.move_to_end(request)
            return _SCORES[request]
    if sel.data_problem and criterion_class(criterion).needs_data:
        return _without_data(sel, criterion, fallback, progress)
    df = score_model(sel.model, criterion, params, probe=sel.probe_spec, progress=progress,
                     fallback=FALLBACK_CRITERION if fallback else None, allow_slow=allow_slow)
    with _SCORES_LOCK:
        _SCORES[request] = df
        while len(_SCORES) > _SCORES_MAX:
            _SCORES.popitem(last=False)
    return df


def _without_data(sel: Selection, criterion: str, fallback: bool, progress) -> pd.DataFrame:
    """A criterion that reads images, for a model that cannot take them: the fallback's scores, saying why (with
    ``fallback``), else UserError."""
    if not fallback:
        raise UserError(sel.data_problem)
    df = score_model(sel.model, FALLBACK_CRITERION, probe=None, progress=progress).copy()
    df.attrs.update(requested=criterion, fallback=f"{criterion} reads {sel.dataset} images, and {sel.data_problem}. "
                                                  f"The filters are ranked by {FALLBACK_CRITERION} instead.")
    return df


def has_scores(sel: Selection, criterion: str, params: dict | None = None, *, fallback: bool = True,
               allow_slow: bool = True) -> bool:
    """Whether :func:`scores` would answer from memory at once."""
    return _request(sel, criterion, params, fallback, allow_slow) in _SCORES


def _request(sel: Selection, criterion: str, params: dict | None, *flags) -> tuple:
    """What the scores depend on: the weights, the criterion and its parameters, the probe and where its images
    are (a data set that appears or goes changes what can be scored), the fallback rule."""
    return sel.key, criterion, tuple(sorted((params or {}).items())), sel.probe_spec, sel.data_path, flags


def reliability_of(sel: Selection, criterion: str, params: dict | None = None, progress=None) -> pd.DataFrame:
    """How reproducible the criterion's ranking is on the selected model
    (:func:`prunekit.analysis.reliability.probe_reliability` on the sidebar's probe), from this process's memory when it
    was measured before."""
    request = ("reliability", *_request(sel, criterion, params))
    with _SCORES_LOCK:
        if request in _SCORES:
            return _SCORES[request]
    table = probe_reliability(sel.model, criterion, params, sel.probe_spec, progress=progress)
    with _SCORES_LOCK:
        _SCORES[request] = table
    return table


def progress_bar(label: str):
    """An st.progress bar and the progress(done, total) callback that fills it."""
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{label}: {done} of {total}")
    return bar, update


def scores_with_progress(sel: Selection, criterion: str, params: dict | None = None, *, fallback: bool = True,
                         allow_slow: bool = True) -> pd.DataFrame:
    """:func:`scores` with a progress bar while computing (none when in memory) and, when another criterion's
    scores came back, a note on the page saying why."""
    if has_scores(sel, criterion, params, fallback=fallback, allow_slow=allow_slow):
        df = scores(sel, criterion, params, fallback=fallback, allow_slow=allow_slow)
    else:
        bar, progress = progress_bar(f"Scoring every filter by {criterion}")
        try:
            df = scores(sel, criterion, params, fallback=fallback, allow_slow=allow_slow, progress=progress)
        finally:
            bar.empty()
    if df.attrs.get("fallback"):
        st.info(df.attrs["fallback"], icon=":material/info:")
    return df


def chosen_criterion() -> str:
    """The criterion chosen on the Saliency page (every page scores and picks filters with it)."""
    return st.session_state.get(CRITERION, DEFAULT_CRITERION)


def human(n: float) -> str:
    """12345678 -> '12.35M', 269722 -> '0.27M' (as papers print it), 4321 -> '4.32k'."""
    for unit, size, floor in (("G", 1e9, 1e9), ("M", 1e6, 1e5), ("k", 1e3, 1e3)):
        if abs(n) >= floor:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def duration(minutes: float) -> str:
    """0.8 -> 'about a minute', 7.2 -> 'about 7 minutes', 210 -> 'about 3.5 hours'."""
    if minutes < 1.5:
        return "about a minute"
    return f"about {minutes:.0f} minutes" if minutes < 90 else f"about {minutes / 60:.1f} hours"


def device_label() -> str:
    device = best_device()
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return "Apple GPU (MPS)" if device.type == "mps" else "CPU (no GPU found)"


def _model_choice(source: str, dataset: str):
    """The model the sidebar's ``source`` names -> (model, header, arch, label); UserError when it cannot be used,
    a message (str) in place of the model when there is nothing to use yet."""
    if source == DEFAULT_SOURCE:
        if not DEFAULT_CHECKPOINT.exists():
            raise CheckpointError(DEFAULT_CHECKPOINT, "is missing from assets/.",
                                  "Restore it from git or train it (assets/README.md).")
        model, header = _default_model()
        return model, header, header["arch"], "ResNet-20 · CIFAR-10 (bundled)"
    if source == REGISTRY_SOURCE:
        arch = st.selectbox("Architecture", list_models(), index=list_models().index("resnet20"), key="arch")
        classes = st.number_input("Classes", 1, 10000, 10, key="num_classes")
        model, header = _registry_model(arch, int(classes))
        return model, header, arch, f"{arch} (random weights)"
    if source in SOURCES:
        return pick_source_model(source, dataset)
    upload = st.file_uploader("Checkpoint", type=["pt", "pth", "safetensors"],
                              help=f"A state dict, read safely (no code is unpickled); at most {MAX_UPLOAD_MB} MB.")
    hint = st.selectbox("Architecture (if the file does not say)", ["from the file", *list_models()])
    if upload is None:
        return "Upload a checkpoint to use it."
    if upload.size > MAX_UPLOAD_MB * 2**20:
        return f"{upload.name} is {upload.size / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB."
    data = upload.getvalue()
    model, header = _uploaded_model(hashlib.sha256(data).hexdigest(), upload.name, data,
                                    None if hint == "from the file" else hint)
    return model, header, header.get("arch") or hint, upload.name


def sidebar() -> Selection:
    """Draw the sidebar and keep its choice in st.session_state['selection']."""
    with st.sidebar:
        st.markdown("### :material/content_cut: prunekit")
        st.caption("See inside a CNN's filters, score them by information, prune them for real.")
        source = st.radio("Model", [DEFAULT_SOURCE, REGISTRY_SOURCE, *source_options(), UPLOAD_SOURCE],
                          key="model_source")
        model, header, arch, error, label = None, {}, None, None, ""
        try:
            choice = _model_choice(source, st.session_state.get("dataset") or list_datasets()[0])
            if isinstance(choice, str):
                error = choice
            else:
                model, header, arch, label = choice
        except UserError as exc:
            model, error = None, str(exc)
        if error:
            st.warning(error)
        st.divider()
        dataset = st.selectbox("Data set", list_datasets(), index=0, key="dataset",
                               help="32x32 sets load whole into memory (and onto the GPU when there is one).")
        data_path = locate(dataset)
        if data_path is None:
            st.error(f"No {dataset} data in `{data_root()}`. The Model & data page says how to get it.",
                     icon=":material/folder_off:")
        else:
            st.caption(f"Data: {data_path}")
        probe_n = st.select_slider("Probe images", PROBE_SIZES, value=PROBE.n, key=PROBE_N,
                                   help="How many training images the data-driven criteria (entropy, HRank, "
                                        f"CHIP, Map-EX...) read, from the training split (seed {PROBE.seed}); "
                                        f"{PROBE.n} is the command line's default too. More is steadier and "
                                        "slower.")
        key = _weights_key(model, label, id(model)) if model is not None else ""
        problem = data_problem(model, key, arch, dataset)
        if problem:
            st.warning(problem, icon=":material/block:")
        st.caption(f"Device: {device_label()}")
    selection = Selection(model, arch, header, label, error, dataset, data_path, key, int(probe_n), problem)
    st.session_state["selection"] = selection
    return selection


def through_router() -> None:
    """Every page calls this first. A page opened by its URL on a freshly started server runs once without app.py
    (Streamlit's old pages-folder mode, see below), so without the sidebar and the router's navigation: rerun it
    through app.py then."""
    if "selection" not in st.session_state:
        st.rerun()


def selection() -> Selection:
    """The sidebar's current choice (app.py draws the sidebar before every page)."""
    through_router()
    return st.session_state["selection"]


def page_with_model(title: str, caption: str) -> Selection:
    """Draw a page's title and one-line caption and return the sidebar's choice; without a usable model, say why
    and stop the page there."""
    sel = selection()
    st.title(title)
    st.caption(caption)
    if sel.model is None:
        st.info(sel.error or "No model selected: pick one in the sidebar.", icon=":material/info:")
        st.stop()
    if not any(isinstance(m, torch.nn.Conv2d) for m in sel.model.modules()):
        st.info(f"{sel.arch} has no convolutions: this page scores and prunes conv filters, so it does not apply to "
                "it. The Model & data page still describes it.", icon=":material/info:")
        st.stop()
    return sel


# app.py routes with st.navigation. Streamlit (1.6x) decides once per server, on its first run, whether the app uses
# the old "pages/ folder" mode, and until app.py has called st.navigation it runs a page opened by its URL on its
# own. Declaring the router here (every page imports this module) makes the rerun above go through app.py.
PagesManager.uses_pages_directory = False



started()  # the slow imports are done: take the start-up note of pages/__init__.py away
