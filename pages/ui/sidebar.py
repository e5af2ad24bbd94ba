"""The sidebar (model, data set, probe size, device) and the selection it makes, which every page reads: the model
loaders behind st.cache_resource, :class:`Selection`, :func:`selection` and :func:`page_with_model`.

Cached objects (st.cache_resource) are shared by every session: never prune or train them in place; deep-copy
first.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from pages.ui.classroom import is_presenter, presenter_box
from pages.ui.model_source import CLASSES_BOX, SIZE_BOX, data_problem, pick_source_model, source_options
from pages.ui.router import through_router
from pages.ui.state import PROBE_N, SELECTION
from pages.ui.uploads import stored_upload, sweep_gone_sessions
from prunekit import CheckpointError, best_device, build_model, list_models, load_checkpoint, model_info
from prunekit.criteria.probe import ProbeSpec
from prunekit.criteria.scores import weights_hash
from prunekit.data import data_root, list_datasets, locate
from prunekit.defaults import PROBE
from prunekit.errors import UserError
from prunekit.models.checkpoints import DEFAULT_CHECKPOINT

MAX_UPLOAD_MB = 200  # also server.maxUploadSize in .streamlit/config.toml
DEFAULT_SOURCE = "Bundled default: ResNet-20 on CIFAR-10"
REGISTRY_SOURCE = "A registered architecture (untrained)"
UPLOAD_SOURCE = "Upload a checkpoint (.pt, .pth, .safetensors)"
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
    def no_images(self) -> str:
        """Why no test images could be had to evaluate on, in a sentence for a page that got none: the model does
        not fit the data set (checked first), else the images are not on disk."""
        if self.data_problem:
            return f"this model does not fit {self.dataset}'s images: {self.data_problem}"
        return f"there are no {self.dataset} test images here; the Model & data page says how to get them."

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
def _uploaded_model(digest: str, arch: str | None, _path: Path):
    """The model in the upload with SHA-256 ``digest`` (read from ``_path``, this session's copy): shared by every
    session that uploads the same file."""
    return load_checkpoint(_path, arch=arch)


@st.cache_data(show_spinner=False, max_entries=32)
def _weights_key(_model, label: str, model_id: int) -> str:
    return weights_hash(_model)


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
        classes = st.number_input(CLASSES_BOX, 1, 10000, 10, key="num_classes")
        model, header = _registry_model(arch, int(classes))
        return model, header, arch, f"{arch} (random weights)"
    if source in source_options():
        return pick_source_model(source, dataset)
    if not is_presenter():
        return ("Classroom mode: only the presenter uploads checkpoints (the Presenter box below takes their key); "
                "every other model source is open.")
    upload = st.file_uploader("Checkpoint", type=["pt", "pth", "safetensors"],
                              help=f"A state dict, read safely (no code is unpickled); at most {MAX_UPLOAD_MB} MB.")
    hint = st.selectbox("Architecture (if the file does not say)", ["from the file", *list_models()])
    if upload is None:
        return "Upload a checkpoint to use it."
    if upload.size > MAX_UPLOAD_MB * 2**20:
        return f"{upload.name} is {upload.size / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB."
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    model, header = _uploaded_model(digest, None if hint == "from the file" else hint,
                                    stored_upload(upload.name, data, digest))
    return model, header, header.get("arch") or hint, upload.name


def sidebar() -> Selection:
    """Draw the sidebar and keep its choice in st.session_state['selection']."""
    sweep_gone_sessions()
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
        boxes = (SIZE_BOX,) if source in source_options() else (CLASSES_BOX,) if source == REGISTRY_SOURCE else ()
        problem = data_problem(model, key, arch, dataset, boxes)
        if problem:
            st.warning(problem, icon=":material/block:")
        st.caption(f"Device: {device_label()}")
        presenter_box()
    selection = Selection(model, arch, header, label, error, dataset, data_path, key, int(probe_n), problem)
    st.session_state[SELECTION] = selection
    return selection


def selection() -> Selection:
    """The sidebar's current choice (app.py draws the sidebar before every page)."""
    through_router()
    return st.session_state[SELECTION]


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
