"""Feature maps: what one image looks like inside a conv layer, filter by filter, ordered by the chosen
criterion's score, with the filters the current plan removes marked, and the same maps after pruning."""
import hashlib

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from pages.ui.cached import found, split, structure_of
from pages.ui.figures import grid_figure, legible
from pages.ui.scoring import scores_with_progress
from pages.ui.sidebar import page_with_model
from pages.ui.state import PLAN, PLAN_ROUND_TO, chosen_criterion
from prunekit.analysis.views import feature_maps
from prunekit.criteria import get_criterion
from prunekit.criteria.mapex import expanded_boxes
from prunekit.criteria.probe import box_set
from prunekit.criteria.scores import to_tensors
from prunekit.data.images import fit_image, normalized, read_image
from prunekit.defaults import ROUND_TO
from prunekit.errors import UserError
from prunekit.models.layers import conv_layers
from prunekit.pruning.prune import prune_model
from prunekit.pruning.selection import removed_filters

PREVIEW_KEY = "fm_preview_ratio"


# ----------------------------------------------------------------------------------------------
# The probe image


def show_image(image: torch.Tensor, caption: str) -> None:
    """uint8 (C, H, W) drawn crisp at about 160 pixels (nearest-neighbour upscaling)."""
    k = max(1, 160 // image.shape[-1])
    big = image.repeat_interleave(k, 1).repeat_interleave(k, 2).permute(1, 2, 0).numpy()
    st.image(big[:, :, 0] if big.shape[2] == 1 else big, caption=caption)


def test_image(sel) -> tuple[torch.Tensor, str] | None:
    """An image of the test split picked by index -> (uint8 (C, H, W), its id), None without data."""
    data = split(sel.dataset, "test") if sel.data_path is not None else None
    if data is None:
        st.warning(f"No {sel.dataset} test split: upload an image instead (the Model & data page says how to get "
                   "the data).", icon=":material/folder_off:")
        return None
    i = st.number_input(f"Test image (0 to {len(data) - 1})", 0, len(data) - 1, 0, key="fm_index",
                        help="Any image of the test split; the model never trained on it.")
    image = fit_image(data.images[int(i)], sel.input_size)
    show_image(image, f"test image #{int(i)}: {data.classes[int(data.labels[int(i)])]}")
    return image, f"test:{sel.dataset}:{int(i)}"


def uploaded_image(sel) -> tuple[torch.Tensor, str] | None:
    """An uploaded PNG/JPEG fitted to the model's input -> (uint8 (C, H, W), its digest), None (with a
    message on the page) when there is none or it cannot be used."""
    c, h, w = sel.input_size
    upload = st.file_uploader("Image (PNG or JPEG)", type=["png", "jpg", "jpeg"], key="fm_upload",
                              help=f"Resized so that its shorter side fits, then center-cropped to {w}x{h}.")
    if upload is None:
        st.info("Upload a photo: it is shrunk to the model's input size.", icon=":material/upload:")
        return None
    data = upload.getvalue()
    image, error = image_from_bytes(data, sel.input_size)
    if error:
        st.error(f"**{upload.name}** cannot be used: {error}.", icon=":material/broken_image:")
        return None
    show_image(image, f"{upload.name}, as the model sees it ({w}x{h})")
    return image, "upload:" + hashlib.sha256(data).hexdigest()[:16]


def image_from_bytes(data: bytes, input_size: tuple[int, int, int]) -> tuple[torch.Tensor | None, str | None]:
    """(uint8 image, None), or (None, why the file cannot be used)."""
    try:
        return read_image(data, input_size), None
    except ValueError as exc:
        return None, str(exc)


def image_ui(sel) -> tuple[torch.Tensor, str] | None:
    source = st.radio("Probe image", ["From the test split", "Upload"], horizontal=True, key="fm_source")
    return test_image(sel) if source == "From the test split" else uploaded_image(sel)


# ----------------------------------------------------------------------------------------------
# Scores, structure, plan


def criterion_scores(sel):
    """The scores of the Saliency page's criterion (default parameters) -> (table, the criterion they came from):
    l1's, with a note, when it needs data that is missing or takes minutes and is not scored yet."""
    df = scores_with_progress(sel, chosen_criterion(), allow_slow=False)
    return df, df.attrs["criterion"]


@st.cache_resource(show_spinner=False, max_entries=8)
def _convs(_model, key: str) -> dict:
    return {layer.name: layer for layer in conv_layers(_model)}


@st.cache_resource(show_spinner="Pruning a copy of the model...", max_entries=8)
def _pruned(_model, key: str, ratios: tuple, round_to: int, scores_id: str, _scores, input_size: tuple):
    """A pruned deep copy (the cached model is never touched), cached by (model, ratios, rounding, the scores'
    criterion, data set and probe size)."""
    return prune_model(_model, dict(ratios), _scores, input_size, round_to=round_to)[0]


@st.cache_data(show_spinner=False, max_entries=64)
def _maps(_model, key: str, layer: str, image_id: str, _x, reads: str) -> np.ndarray:
    return feature_maps(_model, layer, _x, reads=reads).numpy()


def round_to() -> int:
    """The Plan page's rounding of kept filters (what pruning by its plan keeps)."""
    return st.session_state.get(PLAN_ROUND_TO, ROUND_TO)


def plan_ui(sel, struct, layer: str) -> tuple[dict, str]:
    """The ratios to preview and what they are: the Plan page's plan when there is one ("the plan"), else a ratio
    for this layer's group ("a preview ratio of 0.30: no plan is set")."""
    roots = {g.root for g in struct.groups}
    plan = {k: v for k, v in (st.session_state.get(PLAN) or {}).items() if k in roots}
    root = struct.out_group.get(layer)
    if plan:
        mine = f"; this layer's group ({root}) at {plan.get(root, 0.0):.0%}" if root else ""
        mine += f"; kept filters rounded to multiples of {round_to()}" if round_to() > 1 else ""
        st.success(f"**The plan** of the Plan & prune page: {len(plan)} groups with a ratio{mine}.",
                   icon=":material/tune:")
        return plan, "the plan"
    if root is None:
        reason = struct.frozen.get(layer, "it belongs to no prunable group")
        st.caption(f"No plan yet, and `{layer}`'s filters cannot be pruned on their own: {reason}.")
        return {}, ""
    members = next(g.members for g in struct.groups if g.root == root)
    st.info("**Preview only**: no plan is set on the Plan & prune page. The slider tries one ratio for this layer's "
            "group; nothing is pruned until you make it the plan.", icon=":material/visibility:")
    ratio = st.slider(f"Preview ratio for this layer's group ({root}, {len(members)} coupled convs)", 0.0, 0.9,
                      0.3, 0.05, format="%.2f", key=PREVIEW_KEY,
                      help="No plan is set on the Plan & prune page: this previews one ratio for this group only.")
    if st.button("Use this ratio in the plan", key="fm_use_ratio",
                 help="Writes {group: ratio} as the plan the Plan & prune page edits."):
        st.session_state[PLAN] = {root: ratio}
    return ({root: ratio}, f"a preview ratio of {ratio:.2f} (no plan is set)") if ratio > 0 else ({}, "")


# ----------------------------------------------------------------------------------------------
# The grid


def original_grid(sel, layer: str, x: torch.Tensor, image_id: str, table, name: str, removed: list[int],
                  what: str) -> None:
    reads = get_criterion(name).reads
    maps = torch.from_numpy(_maps(sel.model, sel.key, layer, image_id, x, reads))
    rows = table[table["layer"] == layer].sort_values(["rank"])
    order = rows["filter"].tolist()
    gone = set(removed)
    labels = [f"#{f} {s:.3g}" + (" ✕" if f in gone else "") for f, s in zip(rows["filter"], rows["score"])]
    marked = {k for k, f in enumerate(order) if f in gone}
    st.markdown(f"**{len(order)} filters of `{layer}`, by {name} score, highest first.** "
                + (f"{len(gone)} of {len(order)} would go with {what}." if what else "No filter is removed: no "
                   "plan is set and no preview ratio chosen."))
    st.plotly_chart(grid_figure(maps, order, labels, marked), width="stretch", key="fm_grid")
    st.caption(f"Each tile is one filter's response to the image (bright = strong; every tile on its own scale), "
               f"labelled with the filter index and its {name} score, the most important first. Tiles veiled with "
               "a red frame are the filters the plan removes. Coupled convs (joined by residual adds) lose the same "
               "filters, chosen by their combined score, so a removed tile can sit before a kept one. "
               + ("For a conv feeding a residual add, the maps are read after the add and its ReLU, where "
                  f"{name} reads them." if reads == "post_add" else "Maps are read after the conv's BN and "
                                                                       "activation."))


def pruned_grid(sel, layer: str, x: torch.Tensor, image_id: str, table, name: str, ratios: dict,
                removed: list[int]) -> None:
    tensors = to_tensors(table)
    scores_id = f"{name}|{sel.dataset}|{sel.probe_n}"
    try:
        pruned = _pruned(sel.model, sel.key, tuple(sorted(ratios.items())), round_to(), scores_id, tensors,
                         sel.input_size)
    except (UserError, RuntimeError) as exc:
        st.error(f"Pruning with this plan failed: {exc}", icon=":material/error:")
        return
    key = f"{sel.key}|pruned|{tuple(sorted(ratios.items()))}|{round_to()}|{scores_id}"
    maps = torch.from_numpy(_maps(pruned, key, layer, image_id, x, get_criterion(name).reads))
    gone = set(removed)
    kept = [f for f in range(len(table[table["layer"] == layer])) if f not in gone]  # pruned layer's channel order
    score_of = dict(zip(table.loc[table["layer"] == layer, "filter"], table.loc[table["layer"] == layer, "score"]))
    order = sorted(range(len(kept)), key=lambda j: -score_of[kept[j]])
    labels = [f"#{kept[j]} {score_of[kept[j]]:.3g}" for j in order]
    st.markdown(f"**{len(kept)} filters left in `{layer}` after pruning** (labelled with their original index).")
    st.plotly_chart(grid_figure(maps, order, labels, set()), width="stretch", key="fm_grid_pruned")
    st.caption("The same image through the pruned model (a copy; the original stays as it was). When only this "
               "layer's group is pruned, a kept map is the original one; pruning earlier layers changes what "
               "reaches this one, so the maps shift.")


# ----------------------------------------------------------------------------------------------
# Map-EX


@st.cache_resource(show_spinner="Preparing the box probe...", max_entries=4)
def _box_set(dataset: str, n: int):
    """The box-labelled images Map-EX reads (:func:`prunekit.criteria.probe.box_set`, what its probe streams)."""
    return box_set(dataset, n)


def mapex_ui(sel, layer) -> None:
    data = found(_box_set, sel.dataset, sel.probe_n) if sel.data_path is not None else None
    if data is None:
        st.info(f"Map-EX reads box-labelled images made from the {sel.dataset} training split, which is missing.",
                icon=":material/folder_off:")
        return
    expand = get_criterion("mapex").config["expand"]
    i = int(st.number_input(f"Box probe image (0 to {len(data) - 1})", 0, len(data) - 1, 0, key="fm_box_index"))
    image = data.images[i].permute(1, 2, 0).numpy()
    fig = go.Figure(go.Image(z=image, hoverinfo="skip"))
    size = image.shape[0]
    for box, grown in zip(data.boxes[i], expanded_boxes(data.boxes[i], layer.receptive_field, expand)):
        fig.add_shape(type="rect", x0=box[0] - 0.5, y0=box[1] - 0.5, x1=box[2] - 0.5, y1=box[3] - 0.5,
                      line=dict(color="#2ca02c", width=3))
        fig.add_shape(type="rect", line=dict(color="#ff7f0e", width=3, dash="dash"),
                      x0=max(-0.5, grown[0] - 0.5), y0=max(-0.5, grown[1] - 0.5),
                      x1=min(size - 0.5, grown[2] - 0.5), y1=min(size - 0.5, grown[3] - 0.5))
    fig.update_layout(height=360, xaxis=dict(visible=False), yaxis=dict(visible=False))
    left, right = st.columns([1, 1])
    with left:
        st.plotly_chart(legible(fig), width="stretch", key="fm_mapex")
    with right:
        label = data.classes[int(data.labels[i])] if data.classes else "?"
        st.markdown(f"**{label}** pasted on a {size}x{size} canvas. `{layer.name}`: total stride {layer.stride}, "
                    f"receptive field {layer.receptive_field} pixels.")
        st.caption("Green: the object's box. Orange dashes: the box grown by half the layer's receptive field "
                   f"({layer.receptive_field / 2:g} pixels per side, clipped to the canvas). A feature-map cell "
                   "counts as foreground when its centre lies strictly inside the dashed box, i.e. its receptive "
                   "field overlaps the object (touching its edge is not enough). Deep layers see so far that every "
                   "cell is foreground, and Map-EX then skips the image there.")


# ----------------------------------------------------------------------------------------------

sel = page_with_model(
    "Feature maps",
    "What one image looks like inside a layer, filter by filter, and what is left of it after pruning.")

top_left, top_right = st.columns([1, 2], gap="large")
with top_left:
    picked = image_ui(sel)
table, criterion = criterion_scores(sel)
layers = list(dict.fromkeys(table["layer"]))
with top_right:
    layer = st.selectbox("Layer", layers, key="fm_layer", help="A conv of the model, in forward order.")
    try:
        struct = structure_of(sel)
    except (UserError, RuntimeError) as exc:
        struct = None
        st.warning(f"The prunable groups of this model cannot be traced ({exc}): no plan preview.",
                   icon=":material/warning:")
    ratios, what = plan_ui(sel, struct, layer) if struct is not None else ({}, "")
    removed = removed_filters(struct.groups, ratios, to_tensors(table),
                              round_to=round_to()).get(layer, []) if ratios else []
if picked is None:
    st.stop()
image, image_id = picked
x = normalized(image, sel.dataset)

st.subheader(f"Feature maps of {layer}")
original_grid(sel, layer, x, image_id, table, criterion, removed, what)
if ratios:
    st.subheader("After pruning")
    pruned_grid(sel, layer, x, image_id, table, criterion, ratios, removed)
if criterion == "mapex":
    st.subheader("Map-EX: the boxes it reads")
    mapex_ui(sel, _convs(sel.model, sel.key)[layer])
