"""A viewer without a browser: the Streamlit app's websocket protocol (``/_stcore/stream``) spoken as a browser tab
speaks it, for load tests on one machine. It asks for runs (a page, widget values), reruns the fragments that the
app asks to rerun on a timer (``st.fragment(run_every=...)``, as the browser does), and keeps what the current page
drew: its elements by delta path, so that the sliders, the metrics and any exception can be read. It draws
nothing, so N of them cost the server what N browser tabs would and this machine little else.

>>> async with Viewer("http://127.0.0.1:8501") as v:
...     seconds = await v.open("Plan & prune", limit=60)
...     slider = v.sliders("filters)")[0]
...     seconds = await v.move(slider, +1, limit=60)
"""
from __future__ import annotations

import asyncio
import time

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

FINISHED = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR)


class RunTimeout(TimeoutError):
    """A run, or a state awaited after it, did not come within its limit."""


class Viewer:
    """One browser session's protocol, no drawing. ``open`` and ``move`` send a full rerun (a page, a slider step)
    and return the seconds until that run is over; ``elements`` is what the page holds now."""

    def __init__(self, url: str):
        self.url = url.replace("http", "ws", 1).rstrip("/") + "/_stcore/stream"
        self.origin = url.rstrip("/")
        self.pages: dict[str, str] = {}  # page name -> page script hash, from the app's navigation
        self.page_hash = ""
        self.elements: dict[tuple, object] = {}  # delta path -> Element of the page as drawn now
        self.exceptions: list[str] = []  # every exception the app drew, "Type: message"
        self.closed: str | None = None  # why the connection ended, if it did
        self._widgets: dict[str, WidgetState] = {}
        self._timers: dict[str, asyncio.Task] = {}  # fragment id -> its rerun timer
        self._started_after = 0.0  # when the newest full rerun was asked for
        self._started = 0.0  # when the newest full run started
        self._finished_at: float | None = None  # when a full run that started after that finished
        self._change = asyncio.Condition()
        self._ws = None
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> Viewer:
        self._ws = await connect(self.url, subprotocols=["streamlit"], origin=self.origin, max_size=None,
                                 open_timeout=None, ping_interval=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        for timer in self._timers.values():
            timer.cancel()
        await self._ws.close()
        self._reader.cancel()

    # -- what the page holds ------------------------------------------------------------------------------------
    def sliders(self, label_has: str = "") -> list:
        """The page's sliders whose label contains ``label_has``, in page order."""
        return [e.slider for _, e in sorted(self.elements.items()) if e.WhichOneof("type") == "slider"
                and label_has in e.slider.label]

    def metric(self, label: str) -> str | None:
        """The body of the page's metric labelled ``label`` (None if there is none)."""
        return next((e.metric.body for e in self.elements.values() if e.WhichOneof("type") == "metric"
                     and e.metric.label == label), None)

    def headings(self) -> list[str]:
        return [e.heading.body for _, e in sorted(self.elements.items()) if e.WhichOneof("type") == "heading"]

    # -- what a visitor does ------------------------------------------------------------------------------------
    async def open(self, page: str | None = None, limit: float = 60) -> float:
        """Open ``page`` (a name from the app's navigation; None: the app's default page), as a click on its link
        or a first visit does; the seconds until that run is over."""
        if page is not None:
            if page not in self.pages:
                raise KeyError(f"no page {page!r}: the app has {sorted(self.pages)}")
            self.page_hash = self.pages[page]
        return await self._rerun(limit)

    async def move(self, slider, steps: int, limit: float = 60) -> float:
        """Move ``slider`` (one from :meth:`sliders`) by ``steps`` of its step, within its range, as arrow keys do;
        the seconds until the run that the move started is over."""
        now = self._value(slider)
        value = min(max(now + steps * slider.step, slider.min), slider.max)
        state = WidgetState(id=slider.id)
        state.double_array_value.data.append(round(value, 10))
        self._widgets[slider.id] = state
        return await self._rerun(limit)

    def _value(self, slider) -> float:
        mine = self._widgets.get(slider.id)
        if mine is not None:
            return mine.double_array_value.data[0]
        return (slider.value if slider.set_value else slider.default)[0]

    async def wait_for(self, state, limit: float) -> float:
        """Wait until ``state(self)`` is true (looked at after every message); the seconds it took."""
        t0 = time.perf_counter()
        async with self._change:
            try:
                await asyncio.wait_for(self._change.wait_for(lambda: self.closed or state(self)), limit)
            except TimeoutError:
                raise RunTimeout(f"not within {limit:.0f} s") from None
        if self.closed:
            raise ConnectionError(self.closed)
        return time.perf_counter() - t0

    # -- the protocol ---------------------------------------------------------------------------------------------
    async def _rerun(self, limit: float) -> float:
        t0 = time.perf_counter()
        async with self._change:
            self._started_after, self._finished_at = t0, None
        await self._send(fragment="")
        await self.wait_for(lambda v: v._finished_at is not None, limit)
        return self._finished_at - t0

    async def _send(self, fragment: str) -> None:
        msg = BackMsg()
        state = msg.rerun_script
        state.page_script_hash = self.page_hash
        state.widget_states.widgets.extend(self._widgets.values())
        if fragment:
            state.fragment_id, state.is_auto_rerun = fragment, True
        await self._ws.send(msg.SerializeToString())

    async def _tick(self, fragment: str, interval: float) -> None:
        """A fragment's timer: ask for its rerun every ``interval`` seconds, as the browser does."""
        while True:
            await asyncio.sleep(interval)  # the app's own polling period (st.fragment(run_every=...))
            await self._send(fragment)

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                async with self._change:
                    self._handle(msg)
                    self._change.notify_all()
        except ConnectionClosed as e:
            self.closed = f"the server closed the connection ({e})"
        finally:
            async with self._change:
                self.closed = self.closed or "the connection ended"
                self._change.notify_all()

    def _handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        run = msg.metadata.run
        if kind == "new_session" and not run.fragment_ids:  # a full run starts: the page is drawn anew
            self._started = time.perf_counter()
            self.elements = {}
            for timer in self._timers.values():
                timer.cancel()
            self._timers = {}
        elif kind == "navigation":
            self.pages.update({p.page_name: p.page_script_hash for p in msg.navigation.app_pages if p.page_name})
            self.page_hash = self.page_hash or msg.navigation.page_script_hash
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            element = msg.delta.new_element
            self.elements[tuple(msg.metadata.delta_path)] = element
            if element.WhichOneof("type") == "exception":
                self.exceptions.append(f"{element.exception.type}: {element.exception.message}")
        elif kind == "auto_rerun":
            fragment = msg.auto_rerun.fragment_id
            if fragment not in self._timers:
                self._timers[fragment] = asyncio.create_task(self._tick(fragment, msg.auto_rerun.interval))
        elif kind == "stop_auto_rerun":
            for fragment in msg.stop_auto_rerun.fragment_ids:
                timer = self._timers.pop(fragment, None)
                if timer is not None:
                    timer.cancel()
        elif kind == "script_finished" and msg.script_finished in FINISHED and self._started >= self._started_after:
            self._finished_at = time.perf_counter()
