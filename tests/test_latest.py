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


def test_every_clients_newest_request_is_served_in_turn_and_a_shared_key_once():
    worker, started, release, ran = LatestWins(), threading.Event(), threading.Event(), []

    def job(name):
        def work():
            ran.append(name)
            started.set()
            release.wait(60)
            return name
        return work

    worker.ask("a1", job("a1"), client="A")
    assert started.wait(60)  # A's first request runs; meanwhile both visitors move their sliders
    for i in range(2, 6):
        worker.ask(f"a{i}", job(f"a{i}"), client="A")
    worker.ask("b1", job("b1"), client="B")
    worker.ask("shared", job("shared-by-C"), client="C")
    worker.ask("shared", job("shared-by-D"), client="D")
    assert worker.waiting() == 4  # one request per client, however often it asked
    release.set()
    for key in ("a5", "b1", "shared"):
        assert worker.wait(key, 60).value is not None, key
    assert ran == ["a1", "a5", "b1", "shared-by-C"]  # A's newest, then B (neither lost), the shared plan once
    assert not worker.busy()


def test_a_client_that_left_is_forgotten():
    worker, started, release = LatestWins(), threading.Event(), threading.Event()
    worker.ask("first", lambda: started.set() or release.wait(60), client="A")
    assert started.wait(60)
    worker.ask("second", lambda: 2, client="B")
    worker.forget("B")
    assert worker.waiting() == 0
    release.set()
    assert worker.wait("first", 60) is not None and worker.result("second") is None


def test_a_waiting_request_knows_how_many_run_before_it():
    worker, started, release = LatestWins(), threading.Event(), threading.Event()

    def blocking():
        started.set()
        release.wait(60)
        return 1

    worker.ask("a", blocking, client="A")
    assert started.wait(60)
    worker.ask("b", lambda: 2, client="B")
    worker.ask("c", lambda: 3, client="C")
    worker.ask("b2", lambda: 2, client="B")  # B's newer plan keeps B's place in the queue
    assert (worker.ahead("a"), worker.ahead("b2"), worker.ahead("c")) == (0, 1, 2)
    assert worker.ahead("b") is None and worker.ahead("nobody asked") is None
    release.set()
    assert worker.wait("c", 60).value == 3 and worker.ahead("c") is None
