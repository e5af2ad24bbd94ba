"""The GPU bundle (benchmarks/gpu_bundle.py, benchmarks/gpu_offline.sh), checked without installing anything: every
import the GPU steps make is covered by the standard library, prunekit, the GPU image or the bundle; the size guard
refuses a bundle over what travels; the offline command installs only from the bundle, pins what is installed and
runs gpu.sh on the bundle's data, and it is the command README gives."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_bundle  # noqa: E402  (benchmarks/ is no package)

OFFLINE = REPO / "benchmarks" / "gpu_offline.sh"
MiB = 2**20


def test_every_import_of_the_gpu_steps_is_in_the_image_or_the_bundle():
    missing, from_image = gpu_bundle.resolve(gpu_bundle.gpu_requirements())
    imports = gpu_bundle.step_imports()
    assert gpu_bundle.uncovered(imports, missing) == {}
    assert set(missing) == {"torch-pruning", "captum"}  # what `make gpu-bundle` downloads
    assert {"torch", "torchvision", "matplotlib"} <= from_image  # captum needs matplotlib: the image holds it
    assert {"torch_pruning", "captum", "torch", "pytest"} <= set(imports)  # the walk reaches the steps' modules
    assert not set(gpu_bundle.DASHBOARD_ONLY) & set(imports)  # so the bundle may leave them out


def test_an_import_outside_the_image_and_the_bundle_is_named(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("import json\n")
    (tmp_path / "pkg" / "deep.py").write_text("def draw():\n    import plotly.express as px\n    return px\n")
    (tmp_path / "step.py").write_text("from pkg import deep\nimport torch_pruning\n")
    imports = gpu_bundle.step_imports(tmp_path, ("step.py",))
    assert imports == {"json": {"pkg/__init__.py"}, "plotly": {"pkg/deep.py"}, "torch_pruning": {"step.py"}}
    providers = {"plotly": ["plotly"], "torch_pruning": ["torch-pruning"]}
    bad = gpu_bundle.uncovered(imports, {}, frozenset({"torch"}), providers)
    assert set(bad) == {"plotly", "torch_pruning"} and "pkg/deep.py" in bad["plotly"]
    assert gpu_bundle.uncovered(imports, {"plotly": "6", "torch-pruning": "1"}, frozenset(), providers) == {}


def test_resolving_stops_at_the_image_and_follows_what_is_missing():
    requires = {"a": ["torch>=2", "b_pkg", "old; python_version < '3.0'", "doc; extra == 'docs'"],
                "b-pkg": ["numpy", "c"], "c": None}
    missing, from_image = gpu_bundle.resolve([Requirement("A"), Requirement("torch")], frozenset({"torch", "numpy"}),
                                             installed=lambda n: f"{n}-v", requires=requires.get)
    assert missing == {"a": "a-v", "b-pkg": "b-pkg-v", "c": "c-v"} and from_image == {"torch", "numpy"}
    with pytest.raises(SystemExit, match=r"torch-pruning 1\.4 is installed here, but torch-pruning<1\.7,>=1\.5 is"):
        gpu_bundle.resolve([Requirement("torch-pruning>=1.5,<1.7")], frozenset(), installed=lambda n: "1.4",
                           requires=lambda n: [])


def _bundle(tmp_path, *sizes: int, name: str = "bundle"):
    bundle = tmp_path / name
    (bundle / "wheels").mkdir(parents=True)
    for i, size in enumerate(sizes):
        with open(bundle / "wheels" / f"w{i}.whl", "wb") as f:
            f.truncate(size)  # sparse: no disk written
    return bundle


def test_the_size_guard_refuses_over_64_mib_bundle_and_tree_together(tmp_path):
    assert gpu_bundle.TRAVEL_LIMIT == 64 * MiB
    assert gpu_bundle.check_size(_bundle(tmp_path, 40 * MiB, 24 * MiB), tree_bytes=0) == 64 * MiB
    with pytest.raises(SystemExit, match=r"64\.0 MiB and the working tree 0\.0 MiB: together over the 64 MiB"):
        gpu_bundle.check_size(_bundle(tmp_path, 64 * MiB + 1, name="over"), tree_bytes=0)
    with pytest.raises(SystemExit, match=r"largest: wheels/w0\.whl 60\.0 MiB"):
        gpu_bundle.check_size(_bundle(tmp_path, 60 * MiB, name="with-tree"), tree_bytes=5 * MiB)


FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for the GPU image's python3: records how it is called
echo "$*" >>"$LOG"
if [[ "$*" == "-m pip list --format=freeze" ]]; then printf 'torch==2.11.0\\n-e /src/x\\nnumpy==2.5.2\\n'; fi
if [[ "$1 $2 $3" == "-m pip install" ]]; then
    while [[ $# -gt 0 ]]; do [[ $1 == --constraint ]] && cp "$2" "$LOG.pinned"; shift; done
fi
if [[ "$*" == *"gpu_report.py env"* ]]; then echo "DATA=$PRUNEKIT_DATA PYTHONPATH=$PYTHONPATH" >>"$LOG"; fi
exit 0
"""


def test_the_offline_command_installs_from_the_bundle_only_and_runs_gpu_sh_on_its_data(tmp_path):
    bundle = _bundle(tmp_path)
    (bundle / "requirements.txt").write_text("captum==0.9.0\n")
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "BUNDLE": str(bundle), "PYTHON": str(fake), "LOG": str(log), "DRY": "1",
           "OUT": str(tmp_path / "out"), "STEPS": "env", "PYTHONPATH": ""}
    done = subprocess.run(["bash", str(OFFLINE)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "-m pip list --format=freeze"
    assert calls[1].startswith(f"-m pip install --isolated --no-index --find-links {bundle}/wheels --constraint ")
    assert calls[1].endswith(f"--requirement {bundle}/requirements.txt")
    assert (tmp_path / "calls.log.pinned").read_text() == "torch==2.11.0\nnumpy==2.5.2\n"  # torch stays 2.11.0
    assert f"DATA={bundle}/data PYTHONPATH={REPO}" in calls
    assert any("benchmarks/gpu_report.py env" in c for c in calls)


def test_the_offline_command_without_a_bundle_says_how_to_make_one(tmp_path):
    done = subprocess.run(["bash", str(OFFLINE)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "BUNDLE": str(tmp_path / "none")})
    assert done.returncode == 2 and "run `make gpu-bundle`" in done.stderr


def test_readme_makefile_and_gitignore_agree_with_the_scripts():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## On a GPU", 1)[1].split("\n## ", 1)[0]
    assert "make gpu-bundle" in section and gpu_bundle.OFFLINE_COMMAND in section and "`gpu-bundle`" in section
    assert "\ngpu-bundle: $(STAMP)\n\t$(PY) benchmarks/gpu_bundle.py\n" in (REPO / "Makefile").read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", "gpu-bundle/wheels/x.whl"], cwd=REPO)
    assert ignored.returncode == 0  # the wheels and the data copy are never committed
