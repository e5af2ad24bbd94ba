"""Latest-wins background work: the newest request is computed, superseded ones are dropped, results are kept by
key (so a stale one is never taken for the current one), and an error is returned, not raised in the thread."""
import threading

from prunekit.runs.latest import LatestWins


def test_only_the_newest_request_runs_and_results_stay_under_their_keys():
    worker, started, release, ran = LatestWins(), threading.Event(), threading.Event(), []

    def slow(name):
        def work():
            ran.append(name)
            started.set()
            release.wait(60)
            return name.upper()
        return work

    worker.ask("a", slow("a"))
    assert started.wait(60)  # "a" is running now
    worker.ask("b", slow("b"))
    worker.ask("c", slow("c"))  # replaces "b", which never starts
    assert worker.busy() and worker.result("c") is None
    release.set()
    assert worker.wait("c", 60).value == "C"
    assert worker.result("a").value == "A" and worker.result("b") is None and ran == ["a", "c"]
    worker.ask("c", slow("again"))  # done already: not computed twice
    assert worker.wait("c", 1).value == "C" and ran == ["a", "c"]


def test_an_error_is_the_outcome_and_the_worker_goes_on():
    worker = LatestWins()
    worker.ask("bad", lambda: 1 / 0)
    assert isinstance(worker.wait("bad", 60).error, ZeroDivisionError)
    worker.ask("good", lambda: 42)
    assert worker.wait("good", 60).value == 42 and not worker.busy()
