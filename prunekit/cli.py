"""Command line: ``python -m prunekit
train|models|datasets|criteria|score|plan|prune|finetune|sensitivity|runs|export``.

The pruning path from the shell: ``score`` (a CSV of per-filter scores) -> ``plan`` (a preset, to a target
fraction of FLOPs or params; a JSON plan) -> ``prune`` (a run directory under the runs root) -> ``finetune``
(the run's pruned model trained further, recorded in the run) -> ``runs``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["main"]


def _train(args: argparse.Namespace) -> int:
    from .distributed import distributed

    with distributed(_device(args)) as world:  # under torchrun: one rank of several (DDP); else a no-op
        return _train_on(args, world)


def _train_on(args: argparse.Namespace, world) -> int:
    from .data import folder_splits, load_arrays, make_loaders, subset
    from .distributed import main_first
    from .models import build_model
    from .train import TrainConfig, fit

    device = world.device
    if args.folder:
        train_set, test_set = folder_splits(args.folder, image_size=args.image_size)
        data_name = str(Path(args.folder).resolve())
    else:
        with main_first():  # rank 0 decodes into the cache, the others read it
            train_set = load_arrays(args.data, "train", args.data_root)
            test_set = load_arrays(args.data, "test", args.data_root)
        data_name = args.data
    num_classes = len(train_set.classes)
    if args.subset:
        train_set = subset(train_set, args.subset, seed=args.seed)
    if args.test_subset:
        test_set = subset(test_set, args.test_subset, seed=0)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        schedule=args.schedule, warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
        seed=args.seed, doconv=args.doconv,
    )
    model = build_model(args.model, num_classes=num_classes)
    train_loader, test_loader = make_loaders(train_set, test_set, config.batch_size, device=device, seed=config.seed,
                                             num_workers=args.workers)
    ranks = f" x {world.world_size} processes ({world.backend})" if world.enabled else ""
    if world.is_main:
        print(f"training {args.model} on {data_name} ({len(train_set)} images) on {device}{ranks} for "
              f"{config.epochs} epochs")
    meta = {"data": data_name, "command": " ".join(["python -m prunekit", *sys.argv[1:]]), "device": str(device),
            "torch": torch.__version__}
    if args.folder:
        meta["image_size"] = args.image_size
    rows = fit(model, train_loader, test_loader, config, args.out, arch=args.model, num_classes=num_classes,
               meta=meta, resume=not args.no_resume)
    total = sum(r["seconds"] for r in rows)
    if world.is_main:
        print(json.dumps({"test_accuracy": rows[-1]["test_accuracy"], "train_seconds": round(total, 1),
                          "out": str(Path(args.out) / "model.safetensors")}))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from .distributed import distributed

    with distributed(_device(args)) as world:  # under torchrun: one rank of several (DDP); else a no-op
        return _finetune_on(args, world)


def _finetune_on(args: argparse.Namespace, world) -> int:
    from .finetune import finetune_config, finetune_run

    device = world.device
    config = finetune_config(args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
                             seed=args.seed, doconv=args.doconv)
    ranks = f" x {world.world_size} processes ({world.backend})" if world.enabled else ""
    if world.is_main:
        print(f"fine-tuning {args.run} on {device}{ranks} for {config.epochs} epochs", file=sys.stderr)
    run = finetune_run(args.run, config, data=args.data, data_root=args.data_root, folder=args.folder,
                       image_size=args.image_size, num_workers=args.workers, subset=args.subset,
                       test_subset=args.test_subset, device=device, resume=not args.no_resume)
    if not world.is_main:
        return 0
    entry = run.manifest["finetune"]
    accuracy = run.manifest.get("accuracy") or {}
    print(json.dumps({"run": str(run.path), "status": run.status,
                      "accuracy_pruned": (accuracy.get("pruned") or {}).get("accuracy"),
                      "accuracy_finetuned": entry["accuracy"], "epochs": len(entry["epochs"]),
                      "model": str(run.path / entry["model"])}))
    return 0


def _models(args: argparse.Namespace) -> int:
    from .models import list_models, model_info

    for name in list_models():
        info = model_info(name)
        print(f"{name:20s} {'x'.join(map(str, info.input_size)):10s} {info.description}")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from .data import data_root, list_datasets

    print(f"data root: {data_root(args.data_root)}")
    for name in list_datasets():
        print(name)
    print("or any ImageFolder tree (<class>/<image> files) for large images")
    return 0


def _parse_params(pairs: list[str], as_json: bool = False) -> dict:
    """``["bins=16", "estimator=pooled"]`` -> ``{"bins": "16", "estimator": "pooled"}`` (values are converted
    and validated by the criterion); with ``as_json`` a value that parses as JSON is read as such (16 -> 16)."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {pair!r}")
        value = value.strip()
        if as_json:
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        params[name.strip()] = value
    return params


def _score(args: argparse.Namespace) -> int:
    from .criteria import get_criterion
    from .data import load_arrays, make_box_probe
    from .probe import Probe
    from .scores import score

    crit = get_criterion(args.criterion, **_parse_params(args.param))
    model, _, _ = _load_model(args)
    probe = None
    if crit.needs_data:
        train_set = load_arrays(args.data, "train", args.data_root)
        if crit.needs_boxes:
            boxes = make_box_probe(train_set, args.n, seed=args.seed)
            probe = Probe.from_boxes(boxes, batch_size=args.batch_size, mean=train_set.mean, std=train_set.std)
        else:
            probe = Probe.from_arrays(train_set, args.n, batch_size=args.batch_size, seed=args.seed)
    with _bar(crit.name) as progress:
        df = score(model, crit, args.layers, probe, cache=not args.no_cache, progress=progress)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(json.dumps({"criterion": repr(crit), "layers": int(df["layer"].nunique()), "filters": len(df),
                      "cached": df.attrs["cached"], "device": str(next(model.parameters()).device),
                      "out": str(out)}))
    if crit.caveat:
        print(f"note: {crit.caveat}", file=sys.stderr)
    return 0


def _criteria(args: argparse.Namespace) -> int:
    import textwrap

    from .criteria import criterion_class, list_criteria

    for name in list_criteria():
        cls = criterion_class(name)
        needs = [w for w, flag in (("data", cls.needs_data), ("labels", cls.needs_labels),
                                   ("boxes", cls.needs_boxes)) if flag]
        print(f"{name}  [{'needs ' + ', '.join(needs) if needs else 'data-free'}]")
        print(textwrap.fill(cls.description, 100, initial_indent="    ", subsequent_indent="    "))
        for p in cls.params:
            print(f"    --param {p.name}={p.default}".ljust(40) + f"{p.doc}; {p.allowed()}")
    return 0


@contextlib.contextmanager
def _bar(desc: str) -> Iterator:
    """A tqdm bar on stderr, driven by the package's ``progress(done, total)`` callbacks."""
    from tqdm import tqdm

    with tqdm(desc=desc, unit="step", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield progress


def _load_model(args: argparse.Namespace):
    """-> (model on the device, arch, num_classes) from --checkpoint (and/or --model)."""
    from .checkpoints import load_checkpoint
    from .data import num_classes
    from .models import build_model

    if args.checkpoint:
        model, header = load_checkpoint(args.checkpoint, arch=args.model)
        arch = args.model or header["arch"]
    elif args.model:
        print(f"warning: no --checkpoint, using a freshly initialised {args.model}", file=sys.stderr)
        arch, model = args.model, build_model(args.model, num_classes=num_classes(args.data))
    else:
        raise ValueError("give --checkpoint (a prunekit file names its architecture) or --model")
    classes = next(m for m in reversed(list(model.modules())) if isinstance(m, torch.nn.Linear)).out_features
    return model.to(_device(args)).eval(), arch, classes


def _device(args: argparse.Namespace) -> torch.device:
    from .metrics import best_device

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    return torch.device(args.device) if getattr(args, "device", None) else best_device()


def _scores(args: argparse.Namespace, model, criterion: str, params: dict) -> dict:
    """{conv: scores} from --scores CSV, else computed (and cached) with ``criterion``."""
    import pandas as pd

    from .criteria import get_criterion
    from .data import load_arrays
    from .probe import Probe
    from .scores import score, to_tensors

    if args.scores:
        return to_tensors(pd.read_csv(args.scores))
    crit = get_criterion(criterion, **params)
    probe = None
    if crit.needs_data:
        if crit.needs_boxes:
            raise ValueError(f"{criterion} needs a box-labelled probe set: score it with `score` and pass --scores")
        probe = Probe.from_arrays(load_arrays(args.data, "train", args.data_root), seed=0)
    with _bar(f"scores ({crit.name})") as progress:
        return to_tensors(score(model, crit, None, probe, progress=progress))


def _input_size(arch: str) -> tuple[int, int, int]:
    from .models import model_info

    return model_info(arch).input_size


def _plan(args: argparse.Namespace) -> int:
    import pandas as pd

    from . import plan as plans

    model, arch, _ = _load_model(args)
    struct = plans.structure(model, _input_size(arch))
    params = _parse_params(args.param)
    common = {"exclude": args.exclude}
    if args.preset == "uniform":
        plan = plans.uniform(struct, arch, args.ratio, target=args.target, by=args.by, criterion=args.criterion,
                             criterion_params=params, **common)
    elif args.preset == "threshold":
        if not args.scores:
            raise ValueError("the threshold preset needs --scores (a CSV written by `score`)")
        table = pd.read_csv(args.scores)
        plan = plans.global_threshold(struct, arch, table, args.threshold, target=args.target, by=args.by,
                                      criterion=str(table["criterion"].iloc[0]), criterion_params=params, **common)
    elif args.preset == "afie":
        plan = plans.afie_plan(model, struct, arch, target=_need_target(args), by=args.by, criterion=args.criterion,
                               criterion_params=params, **common)
    elif args.preset == "sensitivity":
        if not args.sensitivity:
            raise ValueError("the sensitivity preset needs --sensitivity (a CSV written by `sensitivity`)")
        plan = plans.sensitivity_plan(struct, arch, pd.read_csv(args.sensitivity), target=_need_target(args),
                                      by=args.by, metric=args.metric, criterion=args.criterion,
                                      criterion_params=params, **common)
    else:
        plan = plans.vgg16_published(struct, arch, criterion=args.criterion, criterion_params=params)
    plan.save(args.out)
    est = plans.estimate(struct, plan.ratios)
    print(json.dumps({"preset": args.preset, "arch": arch, "criterion": plan.criterion, "groups": len(plan.ratios),
                      "params": [est.params_before, est.params], "macs": [est.macs_before, est.macs],
                      "params_reduction": round(est.params_reduction, 4),
                      "flops_reduction": round(est.macs_reduction, 4),
                      "unprunable": plan.unprunable(struct), "out": args.out}))
    return 0


def _need_target(args: argparse.Namespace) -> float:
    if args.target is None:
        raise ValueError(f"the {args.preset} preset needs --target (a fraction of FLOPs or params to remove)")
    return args.target


def _prune(args: argparse.Namespace) -> int:
    from .data import load_arrays
    from .plan import Plan
    from .runs import list_runs, prune_run

    plan = Plan.load(args.plan)
    if not args.checkpoint and not args.model:
        args.model = plan.arch
    model, arch, classes = _load_model(args)
    if arch != plan.arch:
        raise ValueError(f"the plan was made for {plan.arch}, the model is {arch}")
    scores = _scores(args, model, plan.criterion, plan.criterion_params)
    data = None
    if args.n:
        data = load_arrays(args.data, "test", args.data_root).subset(args.n, seed=0)
    with _bar("prune") as progress:
        run = prune_run(model, plan, scores, arch=arch, num_classes=classes, input_size=_input_size(arch),
                        root=args.runs, checkpoint=args.checkpoint, data=data,
                        latency_batches=() if args.no_latency else (1, 64), repeat=args.repeat, progress=progress)
    row = list_runs(run.path.parent).set_index("run").loc[run.manifest["id"]]
    print(json.dumps({"run": str(run.path), "status": run.status, "params": [int(row.params_before), int(row.params)],
                      "flops": [int(row.flops_before), int(row.flops)],
                      "accuracy_before": row.accuracy_before, "accuracy_pruned": row.accuracy_pruned}, default=str))
    return 0


def _sensitivity(args: argparse.Namespace) -> int:
    from .data import load_arrays
    from .sensitivity import sensitivity

    model, arch, _ = _load_model(args)
    scores = _scores(args, model, args.criterion, _parse_params(args.param))
    data = load_arrays(args.data, "test", args.data_root).subset(args.n, seed=0)
    with _bar("sensitivity") as progress:
        df = sensitivity(model, scores, data, ratios=args.ratios, groups=args.groups, cache=not args.no_cache,
                         progress=progress)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(json.dumps({"groups": int(df["group"].nunique()), "rows": len(df), "cached": df.attrs["cached"],
                      "out": str(out)}))
    return 0


def _runs(args: argparse.Namespace) -> int:
    import pandas as pd

    from .runs import list_runs, runs_root

    df = list_runs(args.runs)
    if args.json:
        print(df.to_json(orient="records"))
    elif df.empty:
        print(f"no runs under {runs_root(args.runs)}")
    else:
        cols = [c for c in ("run", "status", "arch", "criterion", "preset", "params", "flops", "accuracy_before",
                            "accuracy_pruned", "accuracy_finetuned") if c in df]
        with pd.option_context("display.width", 200, "display.max_columns", None):
            print(df[cols].to_string(index=False))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .checkpoints import load_checkpoint
    from .export import export_model
    from .runs import MODEL_FILE

    source = Path(args.run) / MODEL_FILE if args.run else args.checkpoint
    if not source:
        raise ValueError("give --run (a run directory) or --checkpoint")
    model, header = load_checkpoint(source, arch=args.model)
    arch = args.model or header["arch"]
    with _bar("export") as progress:
        paths = export_model(model, args.out, arch=arch, num_classes=int(header.get("num_classes") or 10),
                             input_size=_input_size(arch), formats=args.formats)
        progress(1, 1)
    print(json.dumps({fmt: str(p) for fmt, p in paths.items()}))
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from . import jobs

    if args.action == "list":
        for job in jobs.list_jobs(args.root):
            p = job.progress
            eta = f", ETA {p['eta_s']:.0f} s" if p.get("eta_s") is not None and job.status == "running" else ""
            print(f"{job.id:40s} {job.status:11s} {job.device:6s} {100 * p.get('fraction', 0):5.1f}%{eta}"
                  + (f"  {job.error}" if job.error else ""))
        return 0
    if not args.target:
        raise ValueError(f"`jobs {args.action}` needs a {'kind' if args.action == 'submit' else 'job id'}")
    if args.action == "submit":
        job = jobs.submit(args.target, _parse_params(args.arg, as_json=True), device=args.device, root=args.root)
    else:
        job = getattr(jobs, args.action)(args.target, args.root)
    print(json.dumps({"job": job.id, "status": job.status, "device": job.device, "path": str(job.path)}))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from .jobs import work

    return work(args.device, args.root, idle_exit=args.idle_exit)


def build_parser() -> argparse.ArgumentParser:
    from .data import list_datasets
    from .models import list_models

    parser = argparse.ArgumentParser(prog="python -m prunekit", description="Filter saliency and pruning for CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a registered model from scratch on a 32x32 data set or an image folder",
                       description="Train a registered model from scratch on a 32x32 data set (--data, held on the "
                       "device) or on an image folder (--folder DIR: DIR/train/ and DIR/val/ are ImageFolder trees, "
                       "<class>/<image> files with the same class folders, read by a DataLoader with --workers "
                       "processes at --image-size with the standard ImageNet transforms; the classes are DIR/train's "
                       "folders). Under torchrun (torchrun --nproc_per_node=N -m prunekit train ...) the N processes "
                       "train one model with DistributedDataParallel; --batch-size is per process and rank 0 alone "
                       "writes.")
    t.add_argument("--model", required=True, choices=list_models())
    source = t.add_mutually_exclusive_group()
    source.add_argument("--data", default="cifar10", choices=list_datasets(), help="a 32x32 data set (default cifar10)")
    source.add_argument("--folder", default=None, metavar="DIR",
                        help="an image folder holding train/ and val/ ImageFolder trees (<class>/<image> files)")
    t.add_argument("--image-size", type=int, default=224, help="--folder: side of the square crops (default 224)")
    t.add_argument("--workers", type=int, default=None,
                   help="--folder: DataLoader worker processes (default: min(8, CPU count); 0: read in this process)")
    t.add_argument("--data-root", default=None, help="data folder (default: $PRUNEKIT_DATA or ~/.cache/prunekit/data)")
    t.add_argument("--out", required=True, help="output folder (checkpoints, metrics.jsonl); resumed if it has state")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=128,
                   help="images per step and process (under torchrun the global batch is this x the processes)")
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--schedule", default="cosine", choices=["cosine", "step", "onecycle"])
    t.add_argument("--warmup-epochs", type=float, default=1.0)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--subset", type=int, default=0, help="train on this many images only (0: all)")
    t.add_argument("--test-subset", type=int, default=0, help="test on this many images only (0: all)")
    t.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    t.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    t.add_argument("--no-resume", action="store_true", help="start over even if --out holds a saved state")
    t.add_argument("--doconv", action="store_true", help="train with DO-Conv (files hold the folded plain convs)")
    t.set_defaults(func=_train)

    f = sub.add_parser("finetune", help="fine-tune a run's pruned model; checkpoints and metrics go into the run",
                       description="Fine-tune a run's pruned model; checkpoints and metrics go into the run. Under "
                       "torchrun (torchrun --nproc_per_node=N -m prunekit finetune --run-dir DIR) the N processes "
                       "train with DistributedDataParallel; --batch-size is per process and rank 0 alone writes.")
    f.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="a run directory written by `prune` (under torchrun write --run-dir: torchrun's own parser "
                   "takes --run for an abbreviation of its --run-path)")
    source = f.add_mutually_exclusive_group()
    source.add_argument("--data", default=None, choices=list_datasets(), help="data set (default: the run's)")
    source.add_argument("--folder", default=None, metavar="DIR",
                        help="an image folder holding train/ and val/ ImageFolder trees (for a model trained on one)")
    f.add_argument("--image-size", type=int, default=224, help="--folder: side of the square crops (default 224)")
    f.add_argument("--workers", type=int, default=None,
                   help="--folder: DataLoader worker processes (default: min(8, CPU count); 0: read in this process)")
    f.add_argument("--data-root", default=None)
    f.add_argument("--epochs", type=int, default=30)
    f.add_argument("--lr", type=float, default=0.01)
    f.add_argument("--batch-size", type=int, default=128,
                   help="images per step and process (under torchrun the global batch is this x the processes)")
    f.add_argument("--weight-decay", type=float, default=5e-4)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--subset", type=int, default=0, help="train on this many images only (0: all)")
    f.add_argument("--test-subset", type=int, default=0, help="test on this many images only (0: all)")
    f.add_argument("--doconv", action="store_true", help="fine-tune with DO-Conv (files hold plain convs)")
    f.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    f.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    f.add_argument("--no-resume", action="store_true", help="start over even if the run holds a fine-tuning state")
    f.set_defaults(func=_finetune)

    m = sub.add_parser("models", help="list the registered models")
    m.set_defaults(func=_models)
    d = sub.add_parser("datasets", help="list the data sets and the data root")
    d.add_argument("--data-root", default=None)
    d.set_defaults(func=_datasets)

    c = sub.add_parser("criteria", help="list the saliency criteria, their descriptions and parameters")
    c.set_defaults(func=_criteria)

    from .criteria import list_criteria

    s = sub.add_parser("score", help="score every filter of a model with a criterion; writes a CSV")
    s.add_argument("--model", required=True, choices=list_models())
    s.add_argument("--checkpoint", default=None, help="weights to score (.pt/.pth/.safetensors); default: fresh")
    s.add_argument("--data", default="cifar10", choices=list_datasets(), help="probe images (training split)")
    s.add_argument("--data-root", default=None)
    s.add_argument("--criterion", required=True, choices=list_criteria())
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a criterion parameter (repeatable); see `python -m prunekit criteria`")
    s.add_argument("--layers", nargs="+", default=None, help="conv names to score (default: every conv)")
    s.add_argument("--n", type=int, default=640, help="probe images (default 640 = 5 x 128)")
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--seed", type=int, default=0, help="seed of the probe images")
    s.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    s.add_argument("--no-cache", action="store_true", help="recompute even if the scores are cached")
    s.add_argument("--out", required=True, help="output CSV (layer, filter, criterion, score, rank)")
    s.set_defaults(func=_score)

    from .export import FORMATS
    from .plan import PRESETS

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", default=None, help="weights (.pt/.pth/.safetensors); names its architecture")
        p.add_argument("--model", default=None, choices=list_models(), help="architecture (default: the file's)")
        p.add_argument("--data", default="cifar10", choices=list_datasets())
        p.add_argument("--data-root", default=None)
        p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
        p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")

    def criterion_args(p: argparse.ArgumentParser, default: str | None) -> None:
        p.add_argument("--criterion", default=default, choices=list_criteria(),
                       help="criterion picking the filters inside each group")
        p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a criterion parameter")
        p.add_argument("--scores", default=None, help="a scores CSV written by `score` (instead of computing them)")

    p = sub.add_parser("plan", help="build a pruning plan with a preset; writes JSON and prints its estimate")
    model_args(p)
    criterion_args(p, "l1")
    p.add_argument("--preset", required=True, choices=PRESETS)
    p.add_argument("--ratio", type=float, default=None, help="uniform: the ratio of every group")
    p.add_argument("--threshold", type=float, default=None, help="threshold: normalised score cut in [0, 1]")
    p.add_argument("--target", type=float, default=None, help="fraction of FLOPs (or params, --by) to remove")
    p.add_argument("--by", default="flops", choices=["flops", "params"])
    p.add_argument("--sensitivity", default=None, help="sensitivity: a CSV written by `sensitivity`")
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "loss"], help="sensitivity: damage measure")
    p.add_argument("--exclude", nargs="+", default=[], help="convs to leave unpruned (with their coupled group)")
    p.add_argument("--out", required=True, help="the plan's JSON file")
    p.set_defaults(func=_plan)

    p = sub.add_parser("prune", help="prune by a plan; records a run (manifest, pruned model) under the runs root")
    model_args(p)
    criterion_args(p, None)
    p.add_argument("--plan", required=True, help="a plan JSON written by `plan`")
    p.add_argument("--n", type=int, default=2000, help="held-out test images for accuracy (0: do not evaluate)")
    p.add_argument("--runs", default=None, help="runs root (default: $PRUNEKIT_RUNS or ./runs)")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per latency measurement")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.set_defaults(func=_prune)

    p = sub.add_parser("sensitivity", help="prune each group alone at several ratios and evaluate; writes a CSV")
    model_args(p)
    criterion_args(p, "l1")
    p.add_argument("--n", type=int, default=1000, help="held-out test images")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    p.add_argument("--groups", nargs="+", default=None, help="group roots (default: every prunable group)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--out", required=True, help="output CSV (group, ratio, accuracy, loss, params, macs)")
    p.set_defaults(func=_sensitivity)

    p = sub.add_parser("runs", help="list the pruning runs")
    p.add_argument("--runs", default=None, help="runs root (default: $PRUNEKIT_RUNS or ./runs)")
    p.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    p.set_defaults(func=_runs)

    p = sub.add_parser("export", help="export a run's pruned model (or a checkpoint) as safetensors/TorchScript/ONNX")
    p.add_argument("--run", default=None, help="a run directory")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--model", default=None, choices=list_models())
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_export)

    p = sub.add_parser("jobs", help="list, submit, cancel or resume background jobs (training, fine-tuning...)",
                       description="Background jobs run in a worker process, one at a time per device. "
                       "`jobs` lists them; `jobs submit finetune --arg run=runs/ID --arg epochs=3` queues one; "
                       "`jobs cancel ID`, `jobs resume ID`.")
    p.add_argument("action", nargs="?", default="list", choices=["list", "submit", "cancel", "resume"])
    p.add_argument("target", nargs="?", default=None, help="the job kind (submit) or job id (cancel, resume)")
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="a job argument (repeatable); VALUE is read as JSON when it parses (3, 0.01, true)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--root", default=None, help="jobs folder (default: $PRUNEKIT_JOBS or <runs root>/.jobs)")
    p.set_defaults(func=_jobs)

    p = sub.add_parser("worker", help="run the queued jobs of one device (started by the jobs API; rarely by hand)")
    p.add_argument("--device", required=True)
    p.add_argument("--root", default=None)
    p.add_argument("--idle-exit", type=float, default=3.0, help="seconds without a job before exiting")
    p.set_defaults(func=_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoints import CheckpointError
    from .data import DataNotFoundError
    from .export import ExportError

    try:
        return args.func(args)
    except (DataNotFoundError, CheckpointError, ExportError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
