from prunekit.text import count, duration, human


def test_an_exact_duration_reads_in_seconds_minutes_or_hours():
    assert [duration(s) for s in (0, 59, 59.9, 61, 3599, 3700)] == ["0 s", "59 s", "59 s", "1 min 01 s",
                                                                   "59 min 59 s", "1 h 01 min"]


def test_an_estimated_duration_is_rounded_and_says_about():
    assert [duration(s, about=True) for s in (48, 89, 432, 5340, 12_600)] == [
        "about a minute", "about a minute", "about 7 minutes", "about 89 minutes", "about 3.5 hours"]


def test_counts_read_as_papers_print_them():
    assert [human(n) for n in (512, 4321, 99_999, 269_722, 12_345_678, 2.5e9)] == [
        "512", "4.32k", "100.00k", "0.27M", "12.35M", "2.50G"]


def test_a_count_takes_the_singular_for_one():
    assert (count(1, "epoch"), count(3, "epoch"), count(0, "epoch")) == ("1 epoch", "3 epochs", "0 epochs")
