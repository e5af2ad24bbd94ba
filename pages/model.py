"""Model & data: the model card (layers, parameters, MACs, accuracy when known), the data and the device."""
import streamlit as st

from pages.ui.figures import cost_figure
from pages.ui.last_run import UNPRUNED_ON
from pages.ui.sidebar import device_label, selection
from prunekit import model_info
from prunekit.data import how_to_get
from prunekit.models.metrics import layer_table
from prunekit.text import human


@st.cache_data(show_spinner="Counting parameters and MACs...", max_entries=16)
def _layers(_model, key: str, input_size: tuple):
    return layer_table(_model, input_size)


def model_card(sel) -> None:
    info = model_info(sel.arch)
    meta = sel.header.get("meta", {})
    table = _layers(sel.model, f"{sel.label}|{sel.arch}|{id(sel.model)}", info.input_size)
    params = sum(p.numel() for p in sel.model.parameters())
    macs = int(table["macs"].sum())

    st.subheader(sel.label)
    st.caption(f"{info.description} · input {'x'.join(map(str, info.input_size))} (C x H x W)")
    weights = sel.header.get("weights") or meta.get("weights")
    if weights and meta.get("epochs"):  # a trained checkpoint: its meta's weights say how the training started
        st.info(f"Weights: trained {meta['epochs']} epochs on {meta.get('data', '?')}, starting from {weights}",
                icon=":material/model_training:")
    elif weights:
        st.info(f"Weights: {weights}", icon=":material/info:" if weights.startswith("pretrained") else
                ":material/casino:")
    cols = st.columns(5)
    cols[0].metric("Architecture", sel.arch)
    cols[1].metric("Parameters", human(params), help=f"{params:,} trainable parameters")
    cols[2].metric("MACs / image", human(macs), help=f"{macs:,} multiply-adds for one "
                   f"{'x'.join(map(str, info.input_size))} input (torch.utils.flop_counter; FLOPs = 2 x MACs)")
    acc = meta.get("test_accuracy")
    cols[3].metric("Test accuracy", f"{acc:.2f}%" if acc is not None else "unknown",
                   help=f"top-1 on the whole {meta.get('data', '?')} test split, measured when the model was "
                        "trained; Plan & prune and Compare measure the unpruned model again on a seeded subset of it "
                        "and name its images, so their figures differ from this one by a few tenths of a point"
                   if acc is not None else "this checkpoint records no accuracy")
    cols[4].metric("Device", device_label().split(" ")[0].rstrip(":"), help=device_label())
    if acc is not None:
        st.caption(f"Test accuracy: {acc:.2f}% on the whole {meta.get('data', '?')} test split, measured when the "
                   f"model was trained. {UNPRUNED_ON}")

    if meta.get("train_config") or meta.get("data"):
        with st.expander("How this model was trained", expanded=False):
            cfg = meta.get("train_config", {})
            st.markdown(
                f"- **Data**: {meta.get('data', '?')} "
                + ("(the CIFAR-10 JPEG copy: JPEG quality 75, so accuracy runs a little below the original's)"
                   if meta.get("data") == "cifar10" else "")
                + f"\n- **Epochs**: {meta.get('epochs', '?')}, batch {cfg.get('batch_size', '?')}, SGD lr "
                f"{cfg.get('lr', '?')} ({cfg.get('schedule', '?')}), weight decay {cfg.get('weight_decay', '?')}"
                + f"\n- **Device**: {meta.get('device', '?')}, torch {meta.get('torch', '?')}"
            )
            if meta.get("command"):
                st.code(meta["command"], language="bash")

    st.subheader("Where the cost sits")
    fig = cost_figure(table)
    st.plotly_chart(fig, width="stretch")
    st.caption(
        "Each column is one conv or linear layer, in forward order: the top bar is its compute per image, the bottom "
        "bar its weights. Early layers work on large maps, so they cost compute; late layers hold most weights. "
        "Pruning a layer's filters shrinks both of its bars and the input side of the next layer."
    )

    with st.expander(f"All {len(table)} layers", expanded=False):
        st.dataframe(table, hide_index=True, width="stretch",
                     column_config={"params": st.column_config.NumberColumn(format="%d"),
                                    "macs": st.column_config.NumberColumn("MACs", format="%d")})


def data_status(sel) -> None:
    st.subheader("Data")
    if sel.data_path is None:
        st.warning(how_to_get(sel.dataset), icon=":material/folder_off:")
        st.markdown(
            "**What works without data:** this model card and every weight-based view (L1/L2 norms, FPGM, "
            "information capacity and independence, AFIE). Feature maps, entropies and accuracy need images: "
            "for CIFAR-10, `torchvision` downloads it into the data root when you are online, or set "
            "`PRUNEKIT_DATA` to a folder that holds `cifar-10-batches-py` or `cifar10-jpeg.tar.gz`."
        )
    else:
        st.success(f"{sel.dataset} found at `{sel.data_path}`", icon=":material/folder_open:")


sel = selection()
st.title("Model & data")
st.page_link("pages/tour.py", label="New here? Take the guided tour (8 short steps)", icon=":material/school:")
st.caption("The network you are exploring, layer by layer. Pick another model or data set in the sidebar.")
if sel.model is None:
    st.info(sel.error or "No model selected.", icon=":material/info:")
else:
    model_card(sel)
data_status(sel)
