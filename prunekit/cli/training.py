"""``train`` (a model from scratch, or from downloaded weights) and ``finetune`` (a run's pruned model), on one
device or under torchrun (DistributedDataParallel)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from prunekit.cli.common import (
    MODEL_HELP,
    add_data_args,
    add_factory_arg,
    add_recipe_args,
    data_request,
    device,
    emit,
    recipe_overrides,
)
from prunekit.data import resolve_splits
from prunekit.distributed import distributed
from prunekit.runs.finetune import finetune_config, finetune_run
from prunekit.training.train import TrainConfig, train_new

__all__ = ["register"]

TORCHRUN = ("Under torchrun (torchrun --nproc_per_node=N -m prunekit {cmd} ...) the N processes train one model with "
            "DistributedDataParallel; --batch-size is per process and rank 0 alone writes.")


def train(args: argparse.Namespace) -> int:

    with distributed(device(args)) as world:  # under torchrun: one rank of several (DDP); else a no-op
        config = TrainConfig(**recipe_overrides(args))
        splits = resolve_splits(data_request(args), seed=config.seed)
        ranks = f" x {world.world_size} processes ({world.backend})" if world.enabled else ""
        if world.is_main:
            print(f"training {args.model} on {splits.name} ({len(splits.train)} images) on {world.device}{ranks} for "
                  f"{config.epochs} epochs")
        meta = {"command": " ".join(["python -m prunekit", *sys.argv[1:]]), "device": str(world.device),
                "torch": torch.__version__, **({"image_size": args.image_size} if args.folder else {})}
        rows = train_new(args.model, splits, config, args.out, device=world.device, workers=args.workers, meta=meta,
                         resume=not args.no_resume, pretrained=args.pretrained)
        if world.is_main:
            seconds = round(sum(r["seconds"] for r in rows), 1)
            emit({"test_accuracy": rows[-1]["test_accuracy"], "train_seconds": seconds,
                  "out": str(Path(args.out) / "model.safetensors")})
    return 0


def finetune(args: argparse.Namespace) -> int:

    with distributed(device(args)) as world:
        config = finetune_config(**recipe_overrides(args))
        ranks = f" x {world.world_size} processes ({world.backend})" if world.enabled else ""
        if world.is_main:
            print(f"fine-tuning {args.run} on {world.device}{ranks} for {config.epochs} epochs", file=sys.stderr)
        run = finetune_run(args.run, config, data=data_request(args), device=world.device, resume=not args.no_resume,
                           teacher=args.teacher, replace_head=args.replace_head)
        if world.is_main:
            entry = run.manifest["finetune"]
            emit({"run": str(run.path), "status": run.status,
                  "accuracy_pruned": ((run.manifest.get("accuracy") or {}).get("pruned") or {}).get("accuracy"),
                  "accuracy_finetuned": entry["accuracy"], "epochs": len(entry["epochs"]),
                  "model": str(run.path / entry["model"]), "teacher": entry["teacher"]})
    return 0


def register(sub) -> None:

    t = sub.add_parser("train", help="train a model from scratch on a 32x32 data set or an image folder",
                       description="Train a model (registered, torchvision:, timm: or factory:, its input size the "
                       "images': @32 for a 32x32 data set) from scratch, or from downloaded weights with "
                       "--pretrained, on a 32x32 data set (--data, held on the "
                       "device) or on an image folder (--folder DIR: DIR/train/ and DIR/val/ are ImageFolder trees "
                       "with the same class folders, read by a DataLoader with --workers processes at --image-size "
                       "with the standard ImageNet transforms; the classes are DIR/train's folders). "
                       + TORCHRUN.format(cmd="train"))
    t.add_argument("--model", required=True, help=MODEL_HELP)
    add_factory_arg(t)
    t.add_argument("--pretrained", action="store_true",
                   help="start from the source's downloaded weights (torchvision, timm; a new head for the data's "
                   "classes); offline, random weights, and the checkpoint's meta says so")
    add_data_args(t, default="cifar10")
    t.add_argument("--out", required=True, help="output folder (checkpoints, metrics.jsonl); resumed if it has state")
    add_recipe_args(t, TrainConfig(), extra=True)
    t.set_defaults(func=train)

    f = sub.add_parser("finetune", help="fine-tune a run's pruned model; checkpoints and metrics go into the run",
                       description="Fine-tune a run's pruned model; checkpoints and metrics go into the run. "
                       + TORCHRUN.format(cmd="finetune --run-dir DIR"))
    f.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="a run directory written by `prune` (under torchrun write --run-dir: torchrun's own parser "
                   "takes --run for an abbreviation of its --run-path)")
    add_data_args(f, default=None)
    add_factory_arg(f)
    f.add_argument("--replace-head", action="store_true",
                   help="when the data's classes differ from the model's outputs, fine-tune a fresh head with the "
                   "data's classes (recorded in the run's manifest; without it such data is refused)")
    add_recipe_args(f, finetune_config(), extra=False)
    _add_distill_args(f, finetune_config())
    f.set_defaults(func=finetune)


def _add_distill_args(p: argparse.ArgumentParser, recipe) -> None:
    """--distill-alpha, --distill-temperature (``recipe``'s values as defaults) and --teacher."""
    p.add_argument("--distill-alpha", type=float, default=recipe.distill_alpha, metavar="A",
                   help="distil from the unpruned model (Hinton et al. 2015): the weight in [0, 1] of the teacher's "
                   f"softened outputs in the loss (default {recipe.distill_alpha:g}; 0: no distillation)")
    p.add_argument("--distill-temperature", type=float, default=recipe.distill_temperature, metavar="T",
                   help=f"the temperature softening both models' outputs (default {recipe.distill_temperature:g})")
    p.add_argument("--teacher", default=None, metavar="FILE",
                   help="the teacher's checkpoint (default: the run's unpruned model, the file it was pruned from, "
                   "when it is still on disk with the same weights)")
