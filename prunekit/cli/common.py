"""What the commands share: argument groups (model, data, device, probe, criterion, training recipe), loading the
model they name, parsing NAME=VALUE pairs, a progress bar and the one-line JSON result every command prints."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import torch
from tqdm import tqdm

from prunekit.criteria import list_criteria
from prunekit.criteria.probe import ProbeSpec
from prunekit.data import DataRequest, list_datasets, num_classes
from prunekit.defaults import FOLDER_IMAGE_SIDE, PROBE
from prunekit.errors import UserError
from prunekit.models.checkpoints import load_checkpoint
from prunekit.models.fits import check_model_data
from prunekit.models.heads import outputs_of as outputs
from prunekit.models.heads import replace_head
from prunekit.models.metrics import best_device
from prunekit.models.source_factory import enable_factories as enable
from prunekit.models.zoo import create_model, model_info
from prunekit.training.train import PRECISIONS, SCHEDULES, TrainConfig

__all__ = ["add_model_args", "add_factory_arg", "enable_factories", "check_data", "add_data_args",
           "add_device_args", "add_probe_args", "add_criterion_args", "add_recipe_args", "parse_params", "bar",
           "device", "load_model", "input_size", "emit", "data_request", "probe_spec", "recipe_overrides",
           "MODEL_HELP"]


def add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")


MODEL_HELP = ("a registered name (`python -m prunekit models`), torchvision:<name>, timm:<name> or "
              "factory:<package.module>:<function> (with --factory), optionally with an input size @<side> or "
              "@<H>x<W>, e.g. torchvision:resnet18@32")


def add_factory_arg(p: argparse.ArgumentParser) -> None:
    """--factory package.module:function (repeatable): the user's own model code, imported at start (and only
    then); ``$PRUNEKIT_FACTORY`` names more."""
    p.add_argument("--factory", action="append", default=[], metavar="PACKAGE.MODULE:FUNCTION",
                   help="import your own model function (num_classes: int) -> nn.Module now, so that "
                   "factory:PACKAGE.MODULE:FUNCTION names it (repeatable; $PRUNEKIT_FACTORY, comma-separated, names "
                   "more). prunekit never imports code because a file names it")


def add_model_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    """--checkpoint, --model, --factory, --pretrained, --replace-head, --data, --data-root and the device: what a
    command scoring or pruning a model reads."""

    p.add_argument("--checkpoint", default=None, help="weights (.pt/.pth/.safetensors); a prunekit file names its "
                   "architecture")
    p.add_argument("--model", default=None, required=required,
                   help=f"architecture (default: the checkpoint's): {MODEL_HELP}")
    add_factory_arg(p)
    p.add_argument("--pretrained", action="store_true",
                   help="without --checkpoint: download the source's pretrained weights (torchvision, timm); offline, "
                   "random weights, and a note says so")
    p.add_argument("--replace-head", action="store_true",
                   help="replace the model's last classifier layer by a fresh one with the data set's classes (when "
                   "they differ; the model is refused otherwise)")
    p.add_argument("--data", default="cifar10", choices=list_datasets(), help="data set (default cifar10)")
    p.add_argument("--data-root", default=None, help="data folder (default: $PRUNEKIT_DATA or ~/.cache/prunekit/data)")
    add_device_args(p)


def enable_factories(args: argparse.Namespace) -> list[str]:
    """Import the factories --factory and $PRUNEKIT_FACTORY name (every command calls this first)."""

    return enable(getattr(args, "factory", None) or [])


def add_data_args(p: argparse.ArgumentParser, *, default: str | None) -> None:
    """A 32x32 data set or an image folder, with the folder's image size and workers."""

    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", default=default, choices=list_datasets(),
                        help=f"a 32x32 data set (default: {default or 'the run`s'})")
    source.add_argument("--folder", default=None, metavar="DIR",
                        help="an image folder holding train/ and val/ ImageFolder trees (<class>/<image> files)")
    p.add_argument("--image-size", type=int, default=FOLDER_IMAGE_SIDE,
                   help=f"--folder: side of the square crops (default {FOLDER_IMAGE_SIDE})")
    p.add_argument("--workers", type=int, default=None,
                   help="--folder: DataLoader worker processes (default: min(8, CPU count); 0: read in this process)")
    p.add_argument("--data-root", default=None, help="data folder (default: $PRUNEKIT_DATA or ~/.cache/prunekit/data)")
    p.add_argument("--subset", type=int, default=0, help="train on this many images only (0: all)")
    p.add_argument("--test-subset", type=int, default=0, help="test on this many images only (0: all)")


def add_recipe_args(p: argparse.ArgumentParser, recipe, *, extra: bool) -> None:
    """The training recipe's options with ``recipe``'s values (a :class:`~prunekit.training.train.TrainConfig`) as defaults;
    ``extra`` adds the schedule, warm-up and label smoothing."""
    p.add_argument("--epochs", type=int, default=recipe.epochs, help=f"default {recipe.epochs}")
    p.add_argument("--batch-size", type=int, default=recipe.batch_size,
                   help="images per step and process (under torchrun the global batch is this x the processes)")
    p.add_argument("--lr", type=float, default=recipe.lr, help=f"base learning rate (default {recipe.lr:g})")
    p.add_argument("--weight-decay", type=float, default=recipe.weight_decay)
    p.add_argument("--seed", type=int, default=recipe.seed)
    if extra:

        p.add_argument("--schedule", default=recipe.schedule, choices=SCHEDULES)
        p.add_argument("--warmup-epochs", type=float, default=recipe.warmup_epochs)
        p.add_argument("--label-smoothing", type=float, default=recipe.label_smoothing)

    p.add_argument("--precision", default=recipe.precision, choices=PRECISIONS,
                   help="auto: bf16 autocast on CUDA, float32 elsewhere; bf16: on the CPU too (faster on a CPU with "
                        "bf16 units); fp32: float32 everywhere")
    p.add_argument("--doconv", action="store_true", help="train with DO-Conv (files hold the folded plain convs)")
    p.add_argument("--no-resume", action="store_true", help="start over even if the output holds a saved state")
    add_device_args(p)


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the recipe options set (those present in ``args``)."""

    return {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}


def data_request(args: argparse.Namespace):
    """The :class:`~prunekit.data.DataRequest` of add_data_args' options."""

    return DataRequest(name=None if args.folder else args.data, root=args.data_root, folder=args.folder,
                       image_size=args.image_size, workers=args.workers, subset=args.subset,
                       test_subset=args.test_subset)


def add_probe_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The probe set's size, seed and batch size (``--n`` for `score`; ``--probe-n`` where --n means held-out
    images)."""

    p.add_argument(f"--{prefix}n", dest="probe_n", type=int, default=PROBE.n,
                   help=f"probe images from the training split (default {PROBE.n})")
    p.add_argument(f"--{prefix}seed", dest="probe_seed", type=int, default=PROBE.seed,
                   help=f"seed of the probe images (default {PROBE.seed})")
    p.add_argument(f"--{prefix}batch-size", dest="probe_batch_size", type=int, default=PROBE.batch_size,
                   help=f"probe images per batch (default {PROBE.batch_size})")


def probe_spec(args: argparse.Namespace):
    """The :class:`~prunekit.criteria.probe.ProbeSpec` of add_probe_args' options and --data / --data-root."""

    return ProbeSpec(args.data, args.probe_n, seed=args.probe_seed, batch_size=args.probe_batch_size,
                     data_root=args.data_root)


def add_criterion_args(p: argparse.ArgumentParser, default: str | None, *, scores: bool = True) -> None:

    p.add_argument("--criterion", default=default, required=default is None and not scores, choices=list_criteria(),
                   help="criterion picking the filters inside each group" + (f" (default {default})" if default
                                                                             else ""))
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a criterion parameter (repeatable); see `python -m prunekit criteria`")
    if scores:
        p.add_argument("--scores", default=None, help="a scores CSV written by `score` (instead of computing them)")
    add_probe_args(p, "probe-")


def parse_params(pairs: list[str], as_json: bool = False) -> dict:
    """``["bins=16", "estimator=pooled"]`` -> ``{"bins": "16", "estimator": "pooled"}`` (values are converted
    and validated by the criterion); with ``as_json`` a value that parses as JSON is read as such (16 -> 16)."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"expected NAME=VALUE, got {pair!r}")
        value = value.strip()
        if as_json:
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        params[name.strip()] = value
    return params


@contextlib.contextmanager
def bar(desc: str) -> Iterator:
    """A tqdm bar on stderr, driven by the package's ``progress(done, total)`` callbacks."""

    with tqdm(desc=desc, unit="step", file=sys.stderr) as b:

        def progress(done: int, total: int) -> None:
            b.total = total
            b.update(done - b.n)

        yield progress


def device(args: argparse.Namespace) -> torch.device:

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    return torch.device(args.device) if getattr(args, "device", None) else best_device()


def load_model(args: argparse.Namespace):
    """-> (model on the device in eval mode, arch, num_classes (its outputs), notes for the run's manifest) from
    --checkpoint and/or --model (built fresh, --pretrained downloaded), its head replaced with --replace-head."""

    notes: dict = {}
    if args.checkpoint:
        if getattr(args, "pretrained", False):
            raise UserError(f"--pretrained downloads fresh weights, and --checkpoint {args.checkpoint} holds its own: "
                            "give one or the other")
        model, header = load_checkpoint(args.checkpoint, arch=args.model)
        arch = args.model or header["arch"]
    elif args.model:
        built = create_model(args.model, num_classes=num_classes(args.data), pretrained=getattr(args, "pretrained",
                                                                                                 False))
        arch, model, notes["weights"] = args.model, built.model, built.weights
        print(f"warning: no --checkpoint, using a freshly built {arch} ({built.weights})", file=sys.stderr)
    else:
        raise UserError("give --checkpoint (a prunekit file names its architecture) or --model")
    if getattr(args, "replace_head", False):
        notes.update(_replaced_head(model, arch, num_classes(args.data), args.data))
    classes = outputs_of(model, input_size(arch))
    return model.to(device(args)).eval(), arch, classes, notes


def _replaced_head(model, arch: str, classes: int, data: str) -> dict:
    """--replace-head: a fresh ``classes``-class head when the outputs differ -> the manifest's note (said on
    stderr)."""

    before = outputs_of(model, input_size(arch))
    if before == classes:
        return {}
    layer = replace_head(model, classes, input_size(arch))
    print(f"note: replaced the {before}-output head ({layer}) by a fresh {classes}-class one for {data} (random "
          "weights: fine-tune before trusting the accuracy)", file=sys.stderr)
    return {"head": {"replaced": layer, "outputs_before": before, "classes": classes, "data": data}}


def outputs_of(model, size: tuple[int, int, int]) -> int:

    return outputs(model, size)


def check_data(args: argparse.Namespace, model, arch: str, *, labels: bool) -> None:
    """The model against --data before any work (:func:`prunekit.models.fits.check_model_data`): its input size, and with
    ``labels`` its outputs against the classes."""

    check_model_data(model, arch, args.data, labels=labels)


def input_size(arch: str) -> tuple[int, int, int]:

    return model_info(arch).input_size


def emit(result: dict[str, Any]) -> int:
    """Print the command's result as one JSON line on stdout (what scripts read); -> exit status 0."""
    print(json.dumps(result, default=str))
    return 0
