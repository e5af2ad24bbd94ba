"""Uploaded checkpoints on disk: one folder per browser session, holding that session's latest upload only, removed
once the session is gone.

Streamlit has no hook for a session's end, so every script run sweeps (:func:`sweep_gone_sessions`): a folder whose
session the server no longer serves (a closed tab, a lost connection) is removed. A session that reconnects still
has its upload in Streamlit's memory, and its next run writes the file again. The folders live under
``$PRUNEKIT_UPLOADS`` (default: ``prunekit-uploads`` in the system's temporary folder), inside one folder per
server process, so two servers on one machine never sweep each other's; a server that died without cleaning up
leaves its folder, which the next server to start removes.

    <root>/<server pid>/<session id>/<sha256[:16]>/<file name>
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import streamlit as st
from streamlit import runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

ROOT_ENV = "PRUNEKIT_UPLOADS"


def uploads_base() -> Path:
    """``$PRUNEKIT_UPLOADS``, else ``<temporary folder>/prunekit-uploads``: where every server keeps its folder."""
    return Path(os.environ.get(ROOT_ENV) or Path(tempfile.gettempdir()) / "prunekit-uploads").expanduser()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_dead_servers(base: Path) -> list[Path]:
    """Remove the folders under ``base`` of server processes that no longer run; returns the removed folders."""
    gone = [p for p in base.glob("*") if p.is_dir() and p.name.isdigit() and not _alive(int(p.name))]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


@st.cache_resource(show_spinner=False)
def server_root() -> Path:
    """This server's folder (``<base>/<pid>``, made by its first upload); dead servers' folders are removed when
    this is first asked for."""
    base = uploads_base()
    if base.is_dir():
        remove_dead_servers(base)
    return base / str(os.getpid())


def session_folder(root: Path, session_id: str) -> Path:
    """The folder of session ``session_id`` under ``root`` (Streamlit's ids are UUIDs; anything else is made safe
    for a file name)."""
    return root / re.sub(r"[^A-Za-z0-9-]", "_", session_id)


def store(root: Path, session_id: str, name: str, data: bytes, digest: str) -> Path:
    """Keep ``data`` (an uploaded file called ``name``, SHA-256 ``digest``) as this session's one upload: the same
    upload again is the file already there; a new one replaces the session's previous upload. Written to a temporary
    name and renamed, so a reader never sees half a file. Returns the file's path."""
    folder = session_folder(root, session_id)
    path = folder / digest[:16] / Path(name).name
    if path.is_file() and path.stat().st_size == len(data):
        return path
    shutil.rmtree(folder, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def sweep(root: Path, alive: Callable[[str], bool]) -> list[Path]:
    """Remove the session folders under ``root`` whose session ``alive(folder name)`` says is gone; returns them."""
    if not root.is_dir():
        return []
    gone = [p for p in root.iterdir() if p.is_dir() and not alive(p.name)]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


def sweep_gone_sessions() -> None:
    """Remove the upload folders of the sessions this server no longer serves (called on every script run; a
    directory listing, nothing more, when nobody uploaded). Outside a served app (AppTest, a bare script) there is
    no list of sessions to ask, so nothing is removed."""
    if runtime.exists():
        sweep(server_root(), runtime.get_instance().is_active_session)


def stored_upload(name: str, data: bytes, digest: str) -> Path:
    """Keep an upload of this browser session on disk (see :func:`store`) -> its path."""
    ctx = get_script_run_ctx()
    return store(server_root(), ctx.session_id if ctx is not None else "script", name, data, digest)
