"""The load test's viewer without a browser (benchmarks/st_client.py) against a small Streamlit app served for real:
it opens pages by name, moves a slider, follows a fragment that reruns on a timer until the app reruns in full (as
the Plan page's predicted accuracy does), and sees an exception the app draws."""
import asyncio
import textwrap

import pytest

from benchmarks.app_server import served
from benchmarks.st_client import RunTimeout, Viewer

APP = textwrap.dedent('''
    import streamlit as st

    def home():
        st.header("Home")
        ratio = st.slider("Ratio (4 filters)", 0.0, 1.0, 0.0, step=0.25, key="ratio")
        ticks = st.session_state.setdefault("ticks", 0)
        if ratio > 0 and ticks < 3:
            waiting()
        else:
            st.metric("Result", f"{ratio:.0%} after {ticks} ticks" if ratio > 0 else "-")

    @st.fragment(run_every=0.1)
    def waiting():
        st.session_state.ticks += 1
        if st.session_state.ticks >= 3:
            st.rerun()
        st.metric("Result", "computing...")

    def broken():
        st.header("Broken")
        raise ValueError("drawn on purpose")

    st.navigation([st.Page(home, title="Home"), st.Page(broken, title="Broken")]).run()
''')


async def _visit(url: str) -> dict:
    async with Viewer(url) as v:
        first = await v.open(None, limit=60)
        seen = {"first": first, "pages": dict(v.pages), "headings": v.headings(), "result": v.metric("Result")}
        slider = v.sliders("filters)")[0]
        await v.move(slider, +1, limit=60)
        seen["after_move"] = v.metric("Result")  # the fragment's placeholder: its timer has not run yet
        await v.wait_for(lambda viewer: "%" in (viewer.metric("Result") or ""), limit=60)
        seen["delivered"] = v.metric("Result")
        await v.open("Broken", limit=60)
        seen["exceptions"] = list(v.exceptions)
        seen["broken_headings"] = v.headings()
        with pytest.raises(KeyError, match="no page 'Nowhere'"):
            await v.open("Nowhere")
        with pytest.raises(RunTimeout):
            await v.wait_for(lambda viewer: False, limit=0.2)
    return seen


def test_viewer_follows_pages_sliders_and_timed_fragments(tmp_path):
    script = tmp_path / "probe_app.py"
    script.write_text(APP)
    with served(tmp_path, tmp_path / "streamlit.log", options=["--client.showErrorDetails", "full"],
                script=str(script)) as app:
        seen = asyncio.run(_visit(app.url))
    assert set(seen["pages"]) == {"Home", "Broken"}
    assert seen["headings"] == ["Home"] and seen["result"] == "-"
    assert seen["after_move"] == "computing..."
    assert seen["delivered"] == "25% after 3 ticks"  # three timed reruns, then the full rerun the fragment asked for
    assert seen["broken_headings"] == ["Broken"]
    assert len(seen["exceptions"]) == 1 and "drawn on purpose" in seen["exceptions"][0]
