"""One way to open a dashboard page under Streamlit's AppTest (used by every tests/test_app_*.py)."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.conftest import REPO

APP = str(REPO / "app.py")


def open_page(page: str | None = None, *, timeout: float = 300, **session) -> AppTest:
    """Run app.py with ``session`` set in st.session_state first, then switch to ``page`` (e.g. "pages/plan.py")
    and run again. Widgets are set through session_state before the first run because AppTest (Streamlit 1.67)
    loses an st.navigation app's sidebar on a rerun of its own."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    if page is not None:
        at.switch_page(page)
        at.run()
    return at
