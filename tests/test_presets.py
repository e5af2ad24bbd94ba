"""Presets as a registry: the command line's choices and options and the dashboard's menu come from it; adding a
preset is one small definition; each preset says what it needs."""
import pytest

from prunekit.cli import build_parser, main
from prunekit.errors import UnknownNameError, UserError
from prunekit.models.zoo import build_model
from prunekit.params import Param
from prunekit.pruning.presets import _REGISTRY, Preset, get_preset, list_presets, register_preset
from prunekit.pruning.structure import estimate, structure
from tests.apptest_kit import open_page

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def struct():
    return structure(build_model("resnet20").eval(), SIZE)


@pytest.fixture
def half_of_first():
    """A preset defined in a test: 'firsthalf' prunes the first ``count`` groups by one ratio."""

    @register_preset
    class FirstGroups(Preset):
        name, label = "firsthalf", "First groups"
        help = "Prunes the first groups only, by one ratio (a test's preset)."
        knob = Param("share", 0.5, "the ratio of the first groups", low=0.0, high=0.9)
        params = (Param("count", 2, "how many groups", low=1),)
        top = 0.9  # a target is solved up to this ratio

        def _prepare(self, ctx):
            first = ctx.groups[: ctx.params["count"]]
            return lambda t: {g.root: t for g in first}

    yield FirstGroups
    _REGISTRY.unregister("firsthalf")


def _plan_subparser():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices["plan"]


def test_the_command_line_choices_are_the_registry():
    plan = _plan_subparser()
    preset = next(a for a in plan._actions if a.dest == "preset")
    assert list(preset.choices) == list_presets() == ["uniform", "threshold", "afie", "sensitivity",
                                                      "vgg16_published", "search"]
    options = {a.dest for a in plan._actions}
    assert {"ratio", "threshold", "metric", "target", "by"} <= options  # every preset's knob and options


def test_a_new_preset_is_one_definition_for_the_package_the_shell_and_the_dashboard(half_of_first, struct,
                                                                                     tmp_path, capsys):
    plan = get_preset("firsthalf").make(struct, "resnet20", value=0.25, count=3)
    roots = [g.root for g in struct.groups[:3]]
    assert plan.ratios == {r: 0.25 for r in roots} and plan.preset == {"name": "firsthalf", "share": 0.25,
                                                                       "target": None, "by": "flops", "count": 3}
    solved = get_preset("firsthalf").make(struct, "resnet20", target=0.05)
    assert estimate(struct, solved.ratios).macs_reduction >= 0.05 and set(solved.ratios) == set(roots[:2])
    assert main(["plan", "--model", "resnet20", "--preset", "firsthalf", "--share", "0.5", "--count", "1",
                 "--out", str(tmp_path / "p.json")]) == 0
    assert '"groups": 1' in capsys.readouterr().out
    assert main(["presets"]) == 0 and "firsthalf  [takes --share or --target]" in capsys.readouterr().out
    at = open_page("pages/plan.py", preset_kind="firsthalf", preset_mode="one share", preset_value=0.5)
    assert not at.exception
    assert at.selectbox(key="preset_kind").options == [get_preset(n).label for n in list_presets()
                                                       if not get_preset(n).judges]  # the search: its own view
    assert any("a test's preset" in c.value for c in at.caption)  # the registry's help text
    at.button(key="preset_apply").click().run()
    assert not at.exception
    assert at.session_state["plan"] == {r: (0.5 if r in roots[:2] else 0.0) for r in (g.root for g in struct.groups)}


def test_what_a_preset_needs_and_takes_is_checked_with_a_reason(struct):
    with pytest.raises(UnknownNameError, match="unknown preset 'nope'; known presets: uniform, threshold"):
        get_preset("nope")
    with pytest.raises(UserError, match="needs per-filter scores"):
        get_preset("threshold").make(struct, "resnet20", value=0.5, criterion="l1")
    with pytest.raises(UserError, match="needs sensitivity curves"):
        get_preset("sensitivity").make(struct, "resnet20", target=0.3)
    with pytest.raises(UserError, match="takes a ratio or a target"):
        get_preset("uniform").make(struct, "resnet20", value=0.5, target=0.5)
    with pytest.raises(UserError, match="fixed budget: it takes no target"):
        get_preset("vgg16_published").make(struct, "resnet20", target=0.5)
    with pytest.raises(UserError, match="ratio must be a number in"):
        get_preset("uniform").make(struct, "resnet20", value=1.5)
    with pytest.raises(UserError, match="has no parameter colour"):
        get_preset("uniform").make(struct, "resnet20", value=0.5, colour="red")
