"""The sidebar's model sources beyond the bundled default, the registry and uploads: a torchvision or timm model
picked from a searchable list, or the user's own factory when the app was started with one
(``streamlit run app.py -- --factory package.module:function``, or ``$PRUNEKIT_FACTORY``), each at an input size
(default: the data set's image side) and, on request, with downloaded weights. Building is cached per
(name, classes, weights) and shows a spinner; the package does the work (:mod:`prunekit.models.sources`)."""
from __future__ import annotations

import argparse
import sys

import streamlit as st

from prunekit import model_info
from prunekit.data import image_size, num_classes
from prunekit.errors import UserError
from prunekit.models.fits import check_model_data
from prunekit.models.heads import outputs_of
from prunekit.models.zoo import create_model
from prunekit.models.source_factory import enable_factories, enabled_factories
from prunekit.models.sources import get_source, model_catalog, source_names

SIZE_BOX, CLASSES_BOX = "Input size (pixels)", "Classes"  # the sidebar's boxes that fix a model/data misfit


def factories() -> list[str]:
    """Enable the factories the app was started with (after ``--`` on streamlit's command line, and
    ``$PRUNEKIT_FACTORY``; a module already imported is not run again) -> their names ("package.module:function").
    One that cannot be imported is an error in the sidebar."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--factory", action="append", default=[])
    known, _ = parser.parse_known_args(sys.argv[1:])
    try:
        return enable_factories(known.factory)
    except UserError as exc:
        st.error(str(exc), icon=":material/code_off:")
        return enabled_factories()


def source_options() -> dict[str, str]:
    """The sidebar's extra sources, {label: source name}: every registered source that offers itself (torchvision,
    timm and, when the app was started with one, the user's factory), in registration order."""
    factories()
    offered = [get_source(name) for name in source_names()]
    return {s.label: s.name for s in offered if s.offered()}


@st.cache_data(show_spinner="Listing the models...")
def _catalog(source: str) -> list[str]:
    return model_catalog(source)


class InputSizeError(UserError):
    """The model built does not run at the input size asked for in the sidebar."""


@st.cache_resource(show_spinner=False, max_entries=4)
def _built(spec: str, classes: int, pretrained: bool):
    """(model in eval mode, header) of ``spec``; InputSizeError when it does not run at its input size."""
    built = create_model(spec, num_classes=classes, pretrained=pretrained)
    try:
        outputs_of(built.model, model_info(spec).input_size)
    except UserError as exc:
        raise InputSizeError(str(exc)) from None
    return built.model.eval(), {"arch": spec, "num_classes": classes, "weights": built.weights}


def _spec(name: str, side: int) -> str:
    """``name`` at ``side`` x ``side`` inputs: with an @ suffix only when that differs from the model's default."""
    _, h, w = model_info(name).input_size
    return name if (h, w) == (side, side) else f"{name}@{side}"


def pick_source_model(source: str, dataset: str):
    """The sidebar's controls for a torchvision / timm / factory model -> (model, header, arch, label). Its classes
    are ``dataset``'s; its input size defaults to the data set's image side. UserError for a bad choice."""
    kind = source_options()[source]
    names = _catalog(kind)
    first = get_source(kind).full_name(get_source(kind).first) if get_source(kind).first else None
    name = st.selectbox(f"{kind} model", names, index=names.index(first) if first in names else 0,
                        key=f"{kind}_model", help="Type to search the list.")
    side = st.number_input(SIZE_BOX, 8, 1024, image_size(dataset)[0], step=8, key="input_side",
                           help=f"The side of the square images the model takes. {dataset}'s images are "
                           f"{'x'.join(map(str, image_size(dataset)))} and are not resized, so the model must take "
                           "that size to score, evaluate or prune on them.")
    pretrained = st.checkbox("Pretrained weights (download)", key="pretrained",
                             help="Download the source's pretrained weights (a new head for this data set's classes). "
                             "Offline, the model starts from random weights and its card says why.")
    spec = _spec(name, int(side))
    with st.spinner(f"Building {spec}..."):
        try:
            model, header = _built(spec, num_classes(dataset), bool(pretrained))
        except InputSizeError:
            own = model_info(name).input_size[1]
            raise UserError(f"{name} does not run on {side}x{side} inputs: set {SIZE_BOX} in the sidebar to a size "
                            f"it takes ({own} is the one it was made for).") from None
    return model, header, spec, f"{spec} ({'pretrained' if header['weights'].startswith('pretrained') else 'random'}" \
                                " weights)"


@st.cache_data(show_spinner=False, max_entries=32)
def _data_problem(_model, key: str, arch: str, dataset: str, boxes: tuple[str, ...]) -> str | None:
    try:
        check_model_data(_model, arch, dataset, labels=True)
    except UserError as exc:
        return in_sidebar_words(exc, _model, arch, dataset, boxes)
    return None


def in_sidebar_words(exc: UserError, model, arch: str, dataset: str, boxes: tuple[str, ...]) -> str:
    """:func:`prunekit.models.fits.check_model_data`'s refusal ``exc`` said with the sidebar's controls (``boxes``:
    those the model's source offers) rather than the command line's: the input size against the images', the
    outputs against the classes."""
    _, h, w = model_info(arch).input_size
    ih, iw = image_size(dataset)
    if (h, w) != (ih, iw):
        fix = (f"set {SIZE_BOX} in the sidebar to {ih}" if SIZE_BOX in boxes and ih == iw else
               f"pick a model made for {ih}x{iw} images, or a data set of {h}x{w} images")
        return f"{arch} expects {h}x{w} inputs; {dataset} images are {ih}x{iw} and are never resized: {fix}."
    outputs, classes = outputs_of(model, (3, h, w)), num_classes(dataset)
    if outputs != classes:
        fix = f"Set {CLASSES_BOX} in the sidebar to {classes}, or pick" if CLASSES_BOX in boxes else "Pick"
        return (f"{arch} has {outputs} outputs and {dataset} has {classes} classes: its predictions cannot be scored "
                f"against these labels (the accuracy would be meaningless). {fix} the data set it was trained on.")
    return str(exc)


def data_problem(model, key: str, arch: str | None, dataset: str, boxes: tuple[str, ...] = ()) -> str | None:
    """Why the selected model cannot take ``dataset``'s images or labels (:func:`prunekit.models.fits.check_model_data`),
    in the sidebar's words (``boxes``: the controls its source offers), None when it can; computed once per model
    and data set."""
    if model is None or not arch:
        return None
    return _data_problem(model, key, arch, dataset, tuple(boxes))
