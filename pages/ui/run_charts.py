"""Charts of one run on the Compare page: filters per conv before and after pruning, and the fine-tuning curve."""
import pandas as pd
import plotly.graph_objects as go

from pages.ui.figures import epoch_axis, legible


def channels_chart(channels: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    fig.add_bar(x=channels["layer"], y=channels["before"], name="before", marker_color="#ced4da")
    fig.add_bar(x=channels["layer"], y=channels["after"], name="after", marker_color="#2f6fed")
    fig.update_layout(barmode="overlay", height=340, yaxis_title="filters", xaxis_title="conv layer",
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0), xaxis_tickangle=-45)
    return legible(fig)


def finetune_chart(epochs: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=epochs["epoch"], y=epochs["test_accuracy"], name="test accuracy (%)", mode="lines+markers")
    if "train_accuracy" in epochs:
        fig.add_scatter(x=epochs["epoch"], y=epochs["train_accuracy"], name="train accuracy (%)",
                        mode="lines+markers", line=dict(dash="dot"))
    fig.update_layout(height=340, xaxis_title="epoch", yaxis_title="top-1 accuracy (%)",
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0))
    fig.update_xaxes(**epoch_axis(int(epochs["epoch"].max())))
    return legible(fig)
