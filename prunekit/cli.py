"""Command line: ``python -m prunekit train|models|datasets|criteria|score ...``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

__all__ = ["main"]


def _train(args: argparse.Namespace) -> int:
    from .data import DeviceLoader, load_arrays
    from .metrics import best_device
    from .models import build_model
    from .train import TrainConfig, fit

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else best_device()
    train_set = load_arrays(args.data, "train", args.data_root)
    test_set = load_arrays(args.data, "test", args.data_root)
    if args.subset:
        train_set = train_set.subset(args.subset, seed=args.seed)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        schedule=args.schedule, warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
        seed=args.seed,
    )
    num_classes = len(train_set.classes)
    model = build_model(args.model, num_classes=num_classes)
    dtype = torch.float32
    train_loader = DeviceLoader(train_set, config.batch_size, train=True, device=device, seed=config.seed, dtype=dtype)
    test_loader = DeviceLoader(test_set, 500, train=False, device=device)
    print(f"training {args.model} on {args.data} ({len(train_set)} images) on {device} for {config.epochs} epochs")
    meta = {"data": args.data, "command": " ".join(["python -m prunekit", *sys.argv[1:]]), "device": str(device),
            "torch": torch.__version__}
    rows = fit(model, train_loader, test_loader, config, args.out, arch=args.model, num_classes=num_classes,
               meta=meta, resume=not args.no_resume)
    total = sum(r["seconds"] for r in rows)
    print(json.dumps({"test_accuracy": rows[-1]["test_accuracy"], "train_seconds": round(total, 1),
                      "out": str(Path(args.out) / "model.safetensors")}))
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


def _parse_params(pairs: list[str]) -> dict[str, str]:
    """``["bins=16", "estimator=pooled"]`` -> ``{"bins": "16", "estimator": "pooled"}`` (values are converted
    and validated by the criterion)."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--param takes NAME=VALUE, got {pair!r}")
        params[name.strip()] = value.strip()
    return params


def _score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .checkpoints import load_checkpoint
    from .criteria import get_criterion
    from .data import load_arrays, make_box_probe, num_classes
    from .metrics import best_device
    from .models import build_model
    from .probe import Probe
    from .scores import score

    crit = get_criterion(args.criterion, **_parse_params(args.param))
    device = torch.device(args.device) if args.device else best_device()
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint, arch=args.model)
    else:
        print(f"warning: no --checkpoint, scoring a freshly initialised {args.model}", file=sys.stderr)
        model = build_model(args.model, num_classes=num_classes(args.data))
    model.to(device)
    probe = None
    if crit.needs_data:
        train_set = load_arrays(args.data, "train", args.data_root)
        if crit.needs_boxes:
            boxes = make_box_probe(train_set, args.n, seed=args.seed)
            probe = Probe.from_boxes(boxes, batch_size=args.batch_size, mean=train_set.mean, std=train_set.std)
        else:
            probe = Probe.from_arrays(train_set, args.n, batch_size=args.batch_size, seed=args.seed)
    with tqdm(desc=crit.name, unit="step", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        df = score(model, crit, args.layers, probe, cache=not args.no_cache, progress=progress)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print(json.dumps({"criterion": repr(crit), "layers": int(df["layer"].nunique()), "filters": len(df),
                      "cached": df.attrs["cached"], "device": str(device), "out": str(out)}))
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


def build_parser() -> argparse.ArgumentParser:
    from .data import list_datasets
    from .models import list_models

    parser = argparse.ArgumentParser(prog="python -m prunekit", description="Filter saliency and pruning for CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a registered model from scratch on a 32x32 data set")
    t.add_argument("--model", required=True, choices=list_models())
    t.add_argument("--data", default="cifar10", choices=list_datasets())
    t.add_argument("--data-root", default=None, help="data folder (default: $PRUNEKIT_DATA or ~/.cache/prunekit/data)")
    t.add_argument("--out", required=True, help="output folder (checkpoints, metrics.jsonl); resumed if it has state")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--schedule", default="cosine", choices=["cosine", "step", "onecycle"])
    t.add_argument("--warmup-epochs", type=float, default=1.0)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--subset", type=int, default=0, help="train on this many images only (0: all)")
    t.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    t.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    t.add_argument("--no-resume", action="store_true", help="start over even if --out holds a saved state")
    t.set_defaults(func=_train)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoints import CheckpointError
    from .data import DataNotFoundError

    try:
        return args.func(args)
    except (DataNotFoundError, CheckpointError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
