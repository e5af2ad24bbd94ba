"""One ratio rule used everywhere, prunekit's own exceptions with the command line's exit codes, and the code's
shape (no function over 60 lines, pages a few hundred lines that only draw)."""
import ast
import subprocess
import sys

import pytest
import torch

from prunekit.cli import main
from prunekit.criteria import get_criterion
from prunekit.data import load_arrays
from prunekit.defaults import MAX_RATIO
from prunekit.errors import DataNotFoundError, PrunekitError, UnknownNameError, UserError
from prunekit.models.zoo import build_model
from prunekit.pruning.plan import Plan
from prunekit.pruning.presets import get_preset
from prunekit.pruning.prune import prune_model
from prunekit.pruning.ratios import check_ratio, kept_channels, max_ratio
from prunekit.pruning.sensitivity import sensitivity
from prunekit.pruning.structure import estimate, structure
from tests.conftest import REPO, tiny_arrays

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def r20():
    model = build_model("resnet20").eval()
    return model, structure(model, SIZE)


def test_the_rule_by_hand():
    assert check_ratio("g", 0) == 0.0 and check_ratio("g", MAX_RATIO) == MAX_RATIO
    for bad in (-0.01, 0.951, 1.0, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(UserError, match=rf"ratio of 'g' must be a number in \[0, {MAX_RATIO}\]"):
            check_ratio("g", bad)
    with pytest.raises(UserError, match="removes every one of the 16 filters"):
        check_ratio("g", 0.95, channels=16)  # int(16 * 0.05) = 0 kept
    assert kept_channels(16, max_ratio(16)) == 1 and kept_channels(64, 0.95) == 3


@pytest.mark.parametrize("use", ["plan", "preset", "estimate", "prune", "sensitivity"])
def test_every_consumer_refuses_a_ratio_above_the_rule_with_its_words(r20, use):
    model, struct = r20
    scores = {n: m.weight.detach().abs().sum((1, 2, 3)) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    calls = {
        "plan": lambda: Plan("resnet20", {"layer3.0.conv1": 0.97}),
        "preset": lambda: get_preset("uniform").make(struct, "resnet20", value=0.97),
        "estimate": lambda: estimate(struct, {"layer3.0.conv1": 0.97}),
        "prune": lambda: prune_model(model, {"layer3.0.conv1": 0.97}, scores, SIZE),
        "sensitivity": lambda: sensitivity(model, scores, tiny_arrays(8), ratios=(0.97,), cache=False),
    }
    with pytest.raises(UserError, match=rf"must be a number in \[0, {MAX_RATIO}\], got 0.97"):
        calls[use]()


def test_unknown_names_raise_one_error_listing_the_known_ones():
    for call, words in ((lambda: build_model("nope"), "unknown model 'nope'; known models: mobilenet_v2, "),
                        (lambda: get_criterion("nope"), "unknown criterion 'nope'; known criteria: sfm_entropy"),
                        (lambda: get_preset("nope"), "unknown preset 'nope'; known presets: uniform"),
                        (lambda: load_arrays("nope"), "unknown data set 'nope'; known: cifar10")):
        with pytest.raises(UnknownNameError) as err:
            call()
        assert words in str(err.value) and not str(err.value).startswith("'")  # the message, not a repr
        assert isinstance(err.value, (UserError, KeyError, PrunekitError))
    assert issubclass(DataNotFoundError, UserError) and issubclass(DataNotFoundError, FileNotFoundError)


def test_the_command_line_prints_a_user_error_and_exits_2(tmp_path, capsys):
    assert main(["plan", "--model", "resnet20", "--preset", "uniform", "--ratio", "1.5", "--out",
                 str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert "\nerror: ratio must be a number in [0, 0.95], got 1.5\n" in err and "Traceback" not in err
    assert not (tmp_path / "p.json").exists()


def test_a_bug_is_not_a_user_error_it_shows_its_traceback_and_exits_1():
    code = ("import sys, prunekit.cli.catalog as c\n"
            "c.models = lambda args: {}['a key that is missing']\n"  # a KeyError that is a bug, not a user error
            "from prunekit.cli import main\nsys.exit(main(['models']))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "KeyError: 'a key that is missing'" in out.stderr
    assert "error: " not in out.stderr.splitlines()[0]


def _functions(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_function_over_60_lines_and_pages_of_a_few_hundred_lines():
    long = [f"{p.relative_to(REPO)}:{name} ({n} lines)" for folder in ("prunekit", "pages")
            for p in sorted((REPO / folder).rglob("*.py")) for name, n in _functions(p) if n > 60]
    assert long == []
    big = [f"{p.name} ({n})" for p in sorted((REPO / "pages").glob("*.py"))
           if (n := len(p.read_text().splitlines())) > 400]
    assert big == []


def test_pages_compute_nothing_themselves():
    """Pages draw: they never import torch_pruning or train, and never call a criterion's score() directly."""
    for page in sorted((REPO / "pages").glob("*.py")):
        text = page.read_text()
        for word in ("torch_pruning", "prunekit.training.train", ".score(", ".backward("):
            assert word not in text, f"{page.name} uses {word}"
