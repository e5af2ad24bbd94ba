"""Uploaded checkpoints on disk (pages/ui/uploads.py): one folder per browser session holding its latest upload
only, removed once the server no longer serves the session; a dead server's folder removed by the next one. The
same in a served app, with two real browsers, is tests/test_browser_classroom.py's upload test."""
import hashlib
import os
import subprocess
import sys

from pages.ui.uploads import remove_dead_servers, session_folder, store, sweep

A, B = "0f3c5a1e-aaaa-4bbb-8ccc-000000000001", "0f3c5a1e-aaaa-4bbb-8ccc-000000000002"


def _keep(root, session: str, name: str, data: bytes):
    return store(root, session, name, data, hashlib.sha256(data).hexdigest())


def test_two_sessions_get_folders_of_their_own(tmp_path):
    a, b = _keep(tmp_path, A, "m.pt", b"weights of a"), _keep(tmp_path, B, "m.pt", b"weights of b")
    assert a != b and a.read_bytes() == b"weights of a" and b.read_bytes() == b"weights of b"
    assert a.is_relative_to(session_folder(tmp_path, A)) and b.is_relative_to(session_folder(tmp_path, B))
    assert session_folder(tmp_path, A) != session_folder(tmp_path, B)
    assert session_folder(tmp_path, "../../etc x").parent == tmp_path  # never outside the root


def test_a_session_keeps_its_latest_upload_only(tmp_path):
    first = _keep(tmp_path, A, "m.pt", b"first")
    assert _keep(tmp_path, A, "m.pt", b"first") == first  # the same upload again: the file already there
    second = _keep(tmp_path, A, "m.pt", b"second, same name")
    assert second != first and second.read_bytes() == b"second, same name" and not first.exists()
    assert [p for p in session_folder(tmp_path, A).rglob("*") if p.is_file()] == [second]


def test_a_gone_session_s_folder_is_removed_and_a_live_one_kept(tmp_path):
    kept, dropped = _keep(tmp_path, A, "a.pt", b"a"), _keep(tmp_path, B, "b.pt", b"b")
    removed = sweep(tmp_path, alive=lambda session: session == A)
    assert removed == [session_folder(tmp_path, B)]
    assert kept.is_file() and not dropped.exists() and not session_folder(tmp_path, B).exists()
    assert sweep(tmp_path / "never made", alive=lambda session: False) == []


def test_a_dead_server_s_folder_is_removed_and_a_running_one_kept(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, running = tmp_path / done.stdout.strip(), tmp_path / str(os.getpid())
    for server in (dead, running):
        _keep(server, A, "m.pt", b"w")
    assert remove_dead_servers(tmp_path) == [dead]
    assert not dead.exists() and running.is_dir()
