"""The package's loaders behind Streamlit's caches, shared by every session: images, the probe, the traced
structure. Cached objects are shared: never prune or train them in place; deep-copy first."""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from pages.ui.sidebar import Selection
from prunekit.criteria.probe import Probe, make_probe
from prunekit.data import ArraySet, DataNotFoundError, held_out_set, load_arrays
from prunekit.pruning.structure import Structure, structure


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
    """The probe the criteria read (:func:`prunekit.criteria.probe.make_probe`, as the command line and the jobs
    build it): ``n`` training images, or with ``boxes`` ``n`` objects of the same split on 64x64 canvases with their
    boxes; None without data."""
    return found(_probe, dataset, n, boxes)


@st.cache_resource(show_spinner="Tracing the model's coupled groups...", max_entries=8)
def _structure(_model, key: str, input_size: tuple) -> Structure:
    return structure(_model, input_size)


def structure_of(sel: Selection) -> Structure:
    """The selected model's prunable structure (groups, layer shapes), traced once per model for every page."""
    return _structure(sel.model, sel.key, sel.input_size)
