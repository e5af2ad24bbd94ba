"""Classroom mode in a real browser (`streamlit run app.py -- --classroom`, Debian's Chromium at 1280x720, every step
waiting on a state): the Plan & prune and Jobs pages as a viewer (the refusals, the Presenter box with its key field)
and as the presenter once the key is typed (Prune and the jobs' Cancel open), each screenshotted into
artifacts/screens/classroom-*.png; and uploaded checkpoints kept per browser session, a closed browser's upload
removed from disk, the upload closed to a viewer."""
import time

import pytest

from prunekit import build_model, save_checkpoint
from prunekit.runs import jobs
from tests.conftest import REPO
from tests.test_browser import CHROMIUM, _frames, _idle, serve

pytestmark = pytest.mark.browser

SCREENS = REPO / "artifacts" / "screens"
KEY = "lecture-key-42"
UPLOAD = "Upload a checkpoint (.pt, .pth, .safetensors)"  # pages.ui.sidebar.UPLOAD_SOURCE, as the radio shows it


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("classroom")


@pytest.fixture(scope="module")
def classroom(work):
    """A classroom server (no job worker) with two jobs of the audience: one queued, one cancelled."""
    root = work / "jobs"
    jobs.submit("finetune", {"run": str(work / "runs" / "r1"), "epochs": 1}, device="cpu", root=root,
                start_worker=False, owner="visitor 3fa2c1")
    jobs.submit("finetune", {"run": str(work / "runs" / "r2"), "epochs": 1}, device="cpu", root=root,
                start_worker=False, owner="visitor 77e0b4").save(status="cancelled")
    yield from serve(work, "streamlit-classroom.log", app_args=("--classroom",), PRUNEKIT_PRESENTER_KEY=KEY,
                     PRUNEKIT_JOBS_NO_WORKER="1", PRUNEKIT_UPLOADS=str(work / "uploads"))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


def _visitor(browser, url: str):
    """A new browser (its own context: its own Streamlit session) on the home page, the run over."""
    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    page.get_by_role("heading", name="Model & data", exact=True).wait_for()
    _idle(page)
    return page


def _go(page, link: str, heading: str) -> None:
    page.locator("[data-testid=stSidebar]").get_by_role("link", name=link).click()
    page.get_by_role("heading", name=heading, exact=True).first.wait_for()
    _idle(page)


def _presenter_box(page):
    """The sidebar's Presenter box, opened."""
    box = page.locator("[data-testid=stSidebar] [data-testid=stExpander]").filter(has_text="Presenter")
    if box.locator("details[open]").count() == 0:
        box.locator("summary").click()
    box.scroll_into_view_if_needed()
    return box


def _enter_key(page) -> None:
    box = _presenter_box(page)
    box.get_by_label("Presenter's key", exact=True).fill(KEY)
    box.get_by_label("Presenter's key", exact=True).press("Enter")
    page.get_by_text("This browser is the presenter's").wait_for()
    _idle(page)


def _screen(page, name: str, shown) -> None:
    """``shown`` scrolled into view, then the 1280x720 window into artifacts/screens/classroom-``name``.png."""
    shown.scroll_into_view_if_needed()
    _frames(page)
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"classroom-{name}.png"))
    assert "Traceback" not in page.inner_text("body"), name


def test_a_viewer_sees_the_refusals_and_the_presenter_the_controls(classroom, browser):
    page = _visitor(browser, classroom)
    _go(page, "Plan & prune", "Plan & prune")
    refusal = page.locator("[data-testid=stAlert]").filter(has_text="only the presenter can prune for real")
    refusal.wait_for()
    assert page.get_by_role("button", name="Prune", exact=True).count() == 0
    _presenter_box(page).get_by_label("Presenter's key", exact=True).wait_for()
    _screen(page, "plan-viewer", refusal)
    _go(page, "Jobs", "Jobs")
    queued = page.get_by_text("queued by visitor 3fa2c1")
    queued.wait_for()
    assert page.get_by_role("button", name="Cancel", exact=True).count() == 0
    assert page.get_by_role("button", name="Cancel the audience's jobs (1)").count() == 0
    _presenter_box(page).get_by_label("Presenter's key", exact=True).wait_for()
    _screen(page, "jobs-viewer", queued)

    _enter_key(page)
    cancel = page.get_by_role("button", name="Cancel", exact=True)
    cancel.wait_for()
    page.get_by_role("button", name="Cancel the audience's jobs (1)").wait_for()
    _screen(page, "jobs-presenter", cancel)
    _go(page, "Plan & prune", "Plan & prune")
    assert page.locator("[data-testid=stAlert]").filter(has_text="only the presenter can").count() == 0
    slider = page.locator("[data-testid=stSlider]").filter(has_text="filters)").first.get_by_role("slider")
    slider.focus()
    slider.press("ArrowRight")  # a ratio above 0: Prune opens
    prune = page.get_by_role("button", name="Prune", exact=True)
    prune.and_(page.locator(":enabled")).wait_for()
    _idle(page)
    _presenter_box(page).get_by_text("This browser is the presenter's").wait_for()
    _screen(page, "plan-presenter", prune)
    page.context.close()


def _until(condition, what: str, limit: float = 120) -> None:
    """Poll the state ``condition()`` (files on disk) until it holds; fail after ``limit`` seconds."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {limit:.0f} s")
        time.sleep(0.2)  # polling a folder, not waiting for a result


def _upload(page, checkpoint) -> None:
    page.locator("[data-testid=stSidebar]").get_by_text(UPLOAD, exact=True).click()
    page.locator("[data-testid=stFileUploaderDropzoneInput]").set_input_files(str(checkpoint))
    page.locator("[data-testid=stSidebar]").get_by_text("Upload a checkpoint to use it.").wait_for(state="detached")
    _idle(page)


def test_uploads_are_kept_per_session_and_removed_when_it_ends(classroom, browser, work):
    checkpoint = save_checkpoint(build_model("resnet20"), work / "mine.safetensors", arch="resnet20",
                                 num_classes=10)
    viewer = _visitor(browser, classroom)
    viewer.locator("[data-testid=stSidebar]").get_by_text(UPLOAD, exact=True).click()
    viewer.locator("[data-testid=stSidebar]").get_by_text("only the presenter uploads checkpoints").wait_for()
    assert viewer.locator("[data-testid=stFileUploaderDropzoneInput]").count() == 0
    viewer.context.close()

    uploads = work / "uploads"

    def sessions() -> list[str]:
        """The sessions (folder names) holding the upload, under the one server's folder."""
        return sorted(p.parent.parent.name for p in uploads.glob("*/*/*/mine.safetensors"))

    first, second = _visitor(browser, classroom), _visitor(browser, classroom)
    _enter_key(first)
    _upload(first, checkpoint)
    _until(lambda: len(sessions()) == 1, "the first session's folder with its upload")
    kept = sessions()[0]
    _enter_key(second)
    _upload(second, checkpoint)
    _until(lambda: len(sessions()) == 2, "a second folder for the second session")
    assert len(list(uploads.iterdir())) == 1  # both in the one server's folder
    second.context.close()
    links = ["Compare runs", "Model & data"]
    end = time.monotonic() + 120
    while len(sessions()) == 2 and time.monotonic() < end:  # each run of the open session sweeps
        _go(first, links[0], links[0])
        links.reverse()
    assert sessions() == [kept], f"after the second browser closed: {sessions()} (the first's: {kept})"
    first.get_by_text("mine.safetensors").first.wait_for()  # the first still uses its upload
    first.context.close()
