"""A --factory module whose own code raises while it is imported: a UserError naming the module, the exception and
the line, never a bare traceback; the command line exits 2 with it, the dashboard shows it in the sidebar."""
import textwrap

import pytest

import prunekit.models.source_factory as factories
from prunekit.cli import main
from prunekit.errors import UserError
from prunekit.models.source_factory import enable_factory
from tests.apptest_kit import open_page

RAISING = '''
    import torch.nn as nn

    raise RuntimeError("no GPU here")

    def tiny(num_classes: int) -> nn.Module:
        return nn.Linear(4, num_classes)
    '''


@pytest.fixture
def raising_module(tmp_path, monkeypatch):
    """A module on sys.path whose import raises RuntimeError at its line 4; an empty factory table meanwhile."""
    (tmp_path / "prunekit_raising_factory.py").write_text(textwrap.dedent(RAISING))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(factories, "_FACTORIES", {})
    monkeypatch.delenv(factories.FACTORY_ENV, raising=False)
    return tmp_path / "prunekit_raising_factory.py"


def test_a_module_that_raises_while_imported_is_a_user_error_naming_it(raising_module):
    with pytest.raises(UserError) as caught:
        enable_factory("prunekit_raising_factory:tiny")
    assert str(caught.value) == (
        "--factory prunekit_raising_factory:tiny: importing prunekit_raising_factory raised RuntimeError: no GPU here "
        f"(at {raising_module}, line 4). Fix that module (its code runs when it is imported), then start again")
    assert factories.enabled_factories() == []


def test_a_module_with_a_syntax_error_says_where(tmp_path, monkeypatch):
    (tmp_path / "prunekit_broken_factory.py").write_text("def tiny(num_classes:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match=r"importing prunekit_broken_factory raised SyntaxError: .*"
                                        r"\(prunekit_broken_factory\.py, line 1\)"):
        enable_factory("prunekit_broken_factory:tiny")


def test_the_command_line_prints_it_and_exits_2(raising_module, capsys):
    assert main(["models", "--source", "factory", "--factory", "prunekit_raising_factory:tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --factory prunekit_raising_factory:tiny: importing prunekit_raising_factory raised "
                          "RuntimeError: no GPU here") and "Traceback" not in err


def test_the_dashboard_shows_it_in_the_sidebar(raising_module, monkeypatch):
    monkeypatch.setenv(factories.FACTORY_ENV, "prunekit_raising_factory:tiny")
    at = open_page()
    assert not at.exception
    assert any("importing prunekit_raising_factory raised RuntimeError: no GPU here" in e.value
               for e in at.sidebar.error)
