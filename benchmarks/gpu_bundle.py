"""The GPU bundle: what benchmarks/gpu.sh needs on a GPU machine that has no package registry and no network.

Made here (where pip reaches a registry) into one git-ignored folder that travels with the working tree:

    gpu-bundle/requirements.txt   the distributions the GPU image lacks, NAME==VERSION as installed in this .venv
    gpu-bundle/wheels/*.whl       their wheels (`pip download --no-deps`, for the image's Python and platform)
    gpu-bundle/from-image.txt     the image's distributions the run relies on (versions as here, for reference)
    gpu-bundle/data/cifar10-jpeg.tar.gz   a copy of the CIFAR-10 JPEG archive

    python benchmarks/gpu_bundle.py [--data DIR] [--out gpu-bundle]      # or `make gpu-bundle`

and used there by `bash benchmarks/gpu_offline.sh` (README "On a GPU"). Which distributions are missing is found by
resolving prunekit's requirements (pyproject.toml, less the dashboard's) against GPU_IMAGE, the image's package
list written below as data: a requirement the image holds stops there, one it lacks goes into the bundle with its
own requirements resolved the same way. The bundle and the working tree together must stay within the 64 MiB that
travel to the GPU machine; the script refuses above it. tests/test_gpu_bundle.py checks that every import the GPU
steps make is covered: the standard library, prunekit, the image or the bundle.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "gpu-bundle"
ARCHIVE = "cifar10-jpeg.tar.gz"
OFFLINE_COMMAND = "bash benchmarks/gpu_offline.sh"  # what runs the check there, with the bundle carried (README)
TRAVEL_LIMIT = 64 * 2**20  # bytes: the working tree and every carried path, together, that travel to the machine
# The GPU machines' image ('cuda'), as the device notes list it (read on 2026-11-17): python3 is CPython 3.12 on
# x86-64 Linux, with these distributions installed.
GPU_PYTHON = "3.12"
GPU_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux1_x86_64")
GPU_IMAGE = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp
""".split())
# Requirements only the dashboard (app.py, pages/) imports: the GPU steps never do, so they stay out of the bundle.
DASHBOARD_ONLY = ("streamlit", "plotly")
# What benchmarks/gpu.sh runs with Python: its steps' scripts, the CUDA tests and the command line (train).
GPU_STEP_FILES = ("benchmarks/gpu_report.py", "benchmarks/finetune_throughput.py", "benchmarks/latency_speedup.py",
                  "tests/conftest.py", "tests/test_cuda.py", "prunekit/__main__.py")


def normalize(name: str) -> str:
    """A distribution's name as PEP 503 compares them: 'Torch_Pruning' -> 'torch-pruning'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def gpu_requirements(root: Path = ROOT) -> list[Requirement]:
    """prunekit's requirements (pyproject.toml's dependencies) less the dashboard's."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return [r for r in reqs if normalize(r.name) not in DASHBOARD_ONLY]


def resolve(requirements: list[Requirement], image: frozenset[str] = GPU_IMAGE,
            installed=metadata.version, requires=metadata.requires) -> tuple[dict[str, str], set[str]]:
    """({missing distribution: its version installed here}, {the image's distributions reached}).

    A requirement the image holds stops there; one it lacks is missing, and its own requirements (markers evaluated
    for the image's Python, no extras) are resolved the same way. ``installed`` / ``requires`` read this
    environment's metadata (a missing distribution must be installed here: its wheel is the version found here)."""
    env = {**default_environment(), "python_version": GPU_PYTHON, "extra": ""}
    missing: dict[str, str] = {}
    from_image: set[str] = set()
    todo = list(requirements)
    while todo:
        req = todo.pop()
        name = normalize(req.name)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        if name in image:
            from_image.add(name)
        elif name not in missing:
            try:
                missing[name] = installed(name)
            except metadata.PackageNotFoundError:
                raise SystemExit(f"{req} is needed and the GPU image lacks it, but it is not installed here either: "
                                 "run `make install` first (its wheel is the version found here)") from None
            if not req.specifier.contains(missing[name], prereleases=True):
                raise SystemExit(f"{name} {missing[name]} is installed here, but {req} is needed: run `make install`")
            todo.extend(Requirement(r) for r in requires(name) or ())
    return dict(sorted(missing.items())), from_image


def _module_file(name: str, roots: tuple[Path, ...]) -> Path | None:
    """The checkout's file of module ``name`` (a package's __init__.py), looked for under each of ``roots``."""
    for base in roots:
        stem = base.joinpath(*name.split("."))
        for path in (stem.with_suffix(".py"), stem / "__init__.py"):
            if path.is_file():
                return path
    return None


def _is_local(top: str, root: Path, near: Path) -> bool:
    """Whether top-level module ``top`` is the checkout's: a module there, or a folder of modules (tests/)."""
    return _module_file(top, (root, near)) is not None or any((root / top).glob("*.py"))


def _imported_names(path: Path) -> set[str]:
    """Every module name an import in ``path`` may load, at any depth (function-level imports included):
    'import a.b' -> a, a.b; 'from a.b import c' -> a, a.b, a.b.c (c may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            full = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
            full = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in full:
            parts = name.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return names


def step_imports(root: Path = ROOT, entries: tuple[str, ...] = GPU_STEP_FILES) -> dict[str, set[str]]:
    """{top-level module from outside the checkout: the checkout's files that import it}, following every import
    of the checkout's own modules (prunekit, tests, benchmarks' common) from the GPU steps' files."""
    outside: dict[str, set[str]] = {}
    seen: set[Path] = set()
    todo = [root / e for e in entries]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in sorted(_imported_names(path)):
            local = _module_file(name, (root, path.parent))
            if local is not None:
                todo.append(local)
            elif not _is_local(name.split(".")[0], root, path.parent):
                outside.setdefault(name.split(".")[0], set()).add(str(path.relative_to(root)))
    return outside


def uncovered(imports: dict[str, set[str]], missing: dict[str, str], image: frozenset[str] = GPU_IMAGE,
              providers: dict[str, list[str]] | None = None) -> dict[str, str]:
    """{imported module: why the GPU run would fail on it} for each of ``imports`` that is neither the standard
    library nor a distribution of the image or the bundle (``providers``: module -> distributions, from here)."""
    providers = metadata.packages_distributions() if providers is None else providers
    bad = {}
    for module, files in sorted(imports.items()):
        if module in sys.stdlib_module_names:
            continue
        dists = {normalize(d) for d in providers.get(module, ())}
        if not dists & (image | set(missing)):
            found = ", ".join(sorted(dists)) or "no distribution installed here"
            bad[module] = f"imported by {', '.join(sorted(files))}; from {found}: neither in the image nor the bundle"
    return bad


def travel_size(root: Path = ROOT) -> int:
    """Bytes of the working tree that travels to the GPU machine: tracked and untracked files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return sum((root / f).stat().st_size for f in listed if f and (root / f).is_file())


def check_size(bundle: Path, tree_bytes: int, limit: int = TRAVEL_LIMIT) -> int:
    """The bundle's size in bytes; SystemExit naming its largest files when it and the tree pass ``limit``."""
    files = sorted((p for p in bundle.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size, reverse=True)
    size = sum(p.stat().st_size for p in files)
    if size + tree_bytes > limit:
        largest = ", ".join(f"{p.relative_to(bundle)} {p.stat().st_size / 2**20:.1f} MiB" for p in files[:3])
        raise SystemExit(f"{bundle} is {size / 2**20:.1f} MiB and the working tree {tree_bytes / 2**20:.1f} MiB: "
                         f"together over the {limit / 2**20:.0f} MiB that travel to the GPU machine (largest: "
                         f"{largest}); leave data or wheels out, or make the tree smaller")
    return size


def download(missing: dict[str, str], wheels: Path) -> None:
    """The wheels of ``missing`` (NAME -> VERSION) into ``wheels``, for the GPU image's Python and platform."""
    platforms = [arg for p in GPU_PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                    GPU_PYTHON, "--implementation", "cp", *platforms, "--dest", str(wheels),
                    *(f"{n}=={v}" for n, v in missing.items())], check=True)


def make_bundle(out: Path, data: Path) -> None:
    """Check the imports, write the requirement lists, download the wheels, copy the archive, check the size."""
    archive = data / ARCHIVE
    if not archive.is_file():
        raise SystemExit(f"no {ARCHIVE} in {data}: pass --data DIR (the folder holding it) or set PRUNEKIT_DATA")
    missing, from_image = resolve(gpu_requirements())
    bad = uncovered(step_imports(), missing)
    if bad:
        raise SystemExit("the GPU steps import what neither the image nor the bundle holds:\n" +
                         "\n".join(f"  {m}: {why}" for m, why in bad.items()))
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    (out / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in missing.items()))
    (out / "from-image.txt").write_text("".join(f"{n}=={metadata.version(n)}\n" for n in sorted(from_image)))
    download(missing, out / "wheels")
    shutil.copyfile(archive, out / "data" / ARCHIVE)
    size = check_size(out, travel_size())
    print(f"{out}: {size / 2**20:.1f} MiB ({', '.join(f'{n}=={v}' for n, v in missing.items())} and {ARCHIVE}); "
          f"on the GPU machine, with '{out.name}' carried: {OFFLINE_COMMAND}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("PRUNEKIT_DATA", ROOT / "data")),
                        help=f"the folder holding {ARCHIVE} (default $PRUNEKIT_DATA)")
    parser.add_argument("--out", type=Path, default=BUNDLE, help="the bundle's folder (default gpu-bundle)")
    args = parser.parse_args(argv)
    make_bundle(args.out.resolve(), args.data)


if __name__ == "__main__":
    main()
