"""Classroom mode: every control that writes or holds the machine (prune, sensitivity, a fine-tuning or a sweep
queued, a job cancelled or resumed, a checkpoint uploaded) is refused without the presenter's key, with what the key
is for, and works with it; reading stays open; jobs record who queued them."""
import pytest

from pages.ui.sidebar import UPLOAD_SOURCE
from pages.ui.state import CRITERION, PLAN as PLAN_KEY
from prunekit.runs import jobs
from tests.apptest_kit import open_page

KEY = "lecture-key-42"
PLAN = {"layer3.0.conv1": 0.5}


@pytest.fixture
def classroom(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_CLASSROOM", "1")
    monkeypatch.setenv("PRUNEKIT_PRESENTER_KEY", KEY)
    monkeypatch.setenv("PRUNEKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PRUNEKIT_JOBS", str(tmp_path / "jobs"))
    monkeypatch.setenv("PRUNEKIT_JOBS_NO_WORKER", "1")
    return tmp_path


def _refusals(at) -> list[str]:
    return [i.value for i in at.info if i.value.startswith("Classroom mode: only the presenter can")]


def _as_presenter(page: str | None = None, **session):
    """The page opened by a browser whose Presenter box holds the key (typed once; AppTest sets widgets through
    session_state before the first run, as it loses the sidebar on a rerun of its own)."""
    at = open_page(page, presenter_key_typed=KEY, **session)
    assert not at.exception
    return at


def test_the_audience_explores_the_plan_but_cannot_prune_or_compute_sensitivity(classroom):
    at = open_page("pages/plan.py", **{CRITERION: "l1", PLAN_KEY: PLAN})
    assert not at.exception
    refused = _refusals(at)
    assert any("prune for real" in r for r in refused) and any("sensitivity curves" in r for r in refused)
    assert any("run the search" in r for r in refused)
    assert "prune_go" not in [b.key for b in at.button] and "sens_go" not in [b.key for b in at.button]
    assert {"Parameters", "Predicted accuracy"} <= {m.label for m in at.metric}  # the estimate is open to all
    at = _as_presenter("pages/plan.py", **{CRITERION: "l1", PLAN_KEY: PLAN})
    assert not _refusals(at)
    assert {"prune_go", "sens_go"} <= {b.key for b in at.button}


def test_a_wrong_key_is_refused_and_the_upload_stays_closed(classroom):
    at = open_page(model_source=UPLOAD_SOURCE)
    assert any("only the presenter uploads checkpoints" in w.value for w in at.warning)
    assert not at.get("file_uploader")
    at = open_page(model_source=UPLOAD_SOURCE, presenter_key_typed="guess")
    assert any("not the presenter's key" in e.value for e in at.error) and not at.get("file_uploader")
    assert _as_presenter(model_source=UPLOAD_SOURCE).get("file_uploader")


def test_jobs_cannot_be_cancelled_or_resumed_by_the_audience_and_say_who_queued_them(classroom):
    root = classroom / "jobs"
    queued = jobs.submit("finetune", {"run": str(classroom / "runs" / "r1"), "epochs": 1}, device="cpu",
                         owner="visitor 3fa2c1")
    stopped = jobs.submit("finetune", {"run": str(classroom / "runs" / "r2"), "epochs": 1}, device="cpu",
                          owner="presenter")
    stopped.save(status="cancelled")
    at = open_page("pages/jobs.py", job_detail=stopped.id)
    assert not at.exception
    keys = {b.key for b in at.button}
    assert f"cancel-{queued.id}" not in keys and f"resume-{stopped.id}" not in keys
    assert any("queued by visitor 3fa2c1" in m.value for m in at.markdown)
    at = _as_presenter("pages/jobs.py", job_detail=stopped.id)
    keys = {b.key for b in at.button}
    assert f"cancel-{queued.id}" in keys and f"resume-{stopped.id}" in keys
    clear = next(b for b in at.button if b.label.startswith("Cancel the audience's jobs"))
    clear.click().run()
    assert (jobs.get(queued.id, root).path / "cancel").exists()


def test_outside_classroom_mode_nothing_asks_for_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("PRUNEKIT_CLASSROOM", raising=False)
    monkeypatch.setenv("PRUNEKIT_RUNS", str(tmp_path / "runs"))
    at = open_page("pages/plan.py", **{CRITERION: "l1", PLAN_KEY: PLAN})
    assert not at.exception and not _refusals(at) and "prune_go" in {b.key for b in at.button}
    assert not [t for t in at.text_input if t.key == "presenter_key_typed"]
