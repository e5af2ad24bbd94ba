"""The Plan page's list of the convs that keep every filter, each with the reason."""
import pandas as pd
import streamlit as st


def frozen_ui(frozen: dict[str, str], expanded: bool = False) -> None:
    """The convs that keep every filter ({conv: why}, from the structure): a count, the list in an expander."""
    if not frozen:
        return
    n = len(frozen)
    with st.expander(f"Not prunable here: {n} conv{'s' if n > 1 else ''} keep every filter (why)", expanded=expanded,
                     icon=":material/lock:"):
        st.caption("Pruning them would break the model or give wrong outputs (each line says why), so they are "
                   "left whole; every other conv is pruned as planned.")
        st.dataframe(pd.DataFrame({"conv": list(frozen), "why": list(frozen.values())}), hide_index=True,
                     width="stretch", height=min(36 * (n + 1) + 3, 400))
