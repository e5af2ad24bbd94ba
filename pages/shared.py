"""What every page shares: the sidebar (model, data, device), cached loaders and number formatting.

Cached objects (st.cache_resource) are shared by every session: never prune or train them in place;
deep-copy first.
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from prunekit import CheckpointError, best_device, build_model, list_models, load_checkpoint
from prunekit.checkpoints import DEFAULT_CHECKPOINT
from prunekit.data import data_root, list_datasets, locate

MAX_UPLOAD_MB = 200  # also server.maxUploadSize in .streamlit/config.toml
DEFAULT_SOURCE = "Bundled default: ResNet-20 on CIFAR-10"
REGISTRY_SOURCE = "A registered architecture (untrained)"
UPLOAD_SOURCE = "Upload a checkpoint (.pt, .pth, .safetensors)"


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


def human(n: float) -> str:
    """12345678 -> '12.35M', 269722 -> '0.27M' (as papers print it), 4321 -> '4.32k'."""
    for unit, size, floor in (("G", 1e9, 1e9), ("M", 1e6, 1e5), ("k", 1e3, 1e3)):
        if abs(n) >= floor:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def device_label() -> str:
    device = best_device()
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return "Apple GPU (MPS)" if device.type == "mps" else "CPU (no GPU found)"


def sidebar() -> Selection:
    """Draw the sidebar and keep its choice in st.session_state['selection']."""
    with st.sidebar:
        st.markdown("### :material/content_cut: prunekit")
        st.caption("See inside a CNN's filters, score them by information, prune them for real.")
        source = st.radio("Model", [DEFAULT_SOURCE, REGISTRY_SOURCE, UPLOAD_SOURCE], key="model_source")
        model, header, arch, error, label = None, {}, None, None, ""
        try:
            if source == DEFAULT_SOURCE:
                if not DEFAULT_CHECKPOINT.exists():
                    raise CheckpointError(DEFAULT_CHECKPOINT, "is missing from assets/.",
                                          "Restore it from git or train it (assets/README.md).")
                model, header = _default_model()
                arch, label = header["arch"], "ResNet-20 · CIFAR-10 (bundled)"
            elif source == REGISTRY_SOURCE:
                arch = st.selectbox("Architecture", list_models(), index=list_models().index("resnet20"), key="arch")
                classes = st.number_input("Classes", 1, 10000, 10, key="num_classes")
                model, header = _registry_model(arch, int(classes))
                label = f"{arch} (random weights)"
            else:
                upload = st.file_uploader("Checkpoint", type=["pt", "pth", "safetensors"],
                                          help=f"A state dict, read safely (no code is unpickled); "
                                               f"at most {MAX_UPLOAD_MB} MB.")
                hint = st.selectbox("Architecture (if the file does not say)", ["from the file", *list_models()])
                if upload is None:
                    error = "Upload a checkpoint to use it."
                elif upload.size > MAX_UPLOAD_MB * 2**20:
                    error = f"{upload.name} is {upload.size / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB."
                else:
                    data = upload.getvalue()
                    digest = hashlib.sha256(data).hexdigest()
                    model, header = _uploaded_model(digest, upload.name, data,
                                                    None if hint == "from the file" else hint)
                    arch, label = header.get("arch") or hint, upload.name
        except (CheckpointError, ValueError, KeyError) as exc:
            model, error = None, str(exc).strip("'\"")
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
        st.caption(f"Device: {device_label()}")
    selection = Selection(model, arch, header, label, error, dataset, data_path)
    st.session_state["selection"] = selection
    return selection


def selection() -> Selection:
    """The sidebar's current choice (the sidebar runs before every page)."""
    return st.session_state["selection"]


