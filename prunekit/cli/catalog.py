"""What is there: ``models``, ``datasets``, ``criteria``, ``presets``, ``runs``; ``export`` a run's model; the
background ``jobs`` and their ``worker``."""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import pandas as pd

from prunekit.cli.common import MODEL_HELP, add_factory_arg, bar, emit, input_size, parse_params
from prunekit.criteria import criterion_class, list_criteria
from prunekit.data import data_root, list_datasets
from prunekit.errors import UserError
from prunekit.models.checkpoints import load_checkpoint
from prunekit.models.sources import get_source
from prunekit.pruning.presets import get_preset, list_presets
from prunekit.runs import jobs as queue
from prunekit.runs.export import FORMATS, export_model
from prunekit.runs.jobs import work
from prunekit.runs.records import MODEL_FILE, list_runs, runs_root
from prunekit.text import duration

__all__ = ["register"]


def models(args: argparse.Namespace) -> int:
    """The registered models with their input size and description; --source <source> lists that source's names
    instead (those containing --search): what the source's :meth:`~prunekit.models.sources.ModelSource.listing`
    says."""

    names = get_source(args.source).listing(args.search)
    if names:
        print("\n".join(names))
    else:
        print(f"no {args.source} model" + (f" contains {args.search!r}" if args.search else " (enable one with "
                                            "--factory package.module:function)"), file=sys.stderr)
    return 0


def datasets(args: argparse.Namespace) -> int:

    print(f"data root: {data_root(args.data_root)}")
    for name in list_datasets():
        print(name)
    print("or any ImageFolder tree (<class>/<image> files) for large images")
    return 0


def _options(params, form: str) -> None:
    """One line per parameter: how to pass it (``form`` with the name and default filled in), its doc, what is
    allowed."""
    for p in params:
        print(("    " + form.format(name=p.name, default=p.default)).ljust(40) + f"{p.doc}; {p.allowed()}")


def criteria(args: argparse.Namespace) -> int:

    for name in list_criteria():
        cls = criterion_class(name)
        needs = [w for w, flag in (("data", cls.needs_data), ("labels", cls.needs_labels),
                                   ("boxes", cls.needs_boxes)) if flag]
        print(f"{name}  [{'needs ' + ', '.join(needs) if needs else 'data-free'}]")
        print(textwrap.fill(cls.description, 100, initial_indent="    ", subsequent_indent="    "))
        _options(cls.params, "--param {name}={default}")
    return 0


def presets(args: argparse.Namespace) -> int:

    for name in list_presets():
        preset = get_preset(name)
        takes = [f"--{preset.knob.name}" if preset.knob else None, "--target" if preset.targets else None]
        print(f"{name}  [takes {' or '.join(t for t in takes if t) or 'nothing: a fixed budget'}"
              + (f"; needs {', '.join(preset.needs)}" if preset.needs else "") + "]")
        print(textwrap.fill(preset.help, 100, initial_indent="    ", subsequent_indent="    "))
        _options(preset.params, "--{name} {default}")
    return 0


def runs(args: argparse.Namespace) -> int:


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
        for row in df[df["status"] == "unreadable"].itertuples():
            print(f"warning: run {row.run} is unreadable: {row.error}", file=sys.stderr)
    return 0


def export(args: argparse.Namespace) -> int:

    source = Path(args.run) / MODEL_FILE if args.run else args.checkpoint
    if not source:
        raise UserError("give --run (a run directory) or --checkpoint")
    model, header = load_checkpoint(source, arch=args.model)
    arch = args.model or header["arch"]
    with bar("export") as progress:
        paths = export_model(model, args.out, arch=arch, num_classes=int(header.get("num_classes") or 10),
                             input_size=input_size(arch), formats=args.formats)
        progress(1, 1)
    return emit({fmt: str(p) for fmt, p in paths.items()})


def jobs(args: argparse.Namespace) -> int:

    if args.action == "list":
        for job in queue.list_jobs(args.root):
            p = job.progress
            eta = f", ETA {duration(p['eta_s'])}" if p.get("eta_s") is not None and job.status == "running" else ""
            print(f"{job.id:40s} {job.status:11s} {job.device:6s} {100 * p.get('fraction', 0):5.1f}%{eta}"
                  + (f"  {job.error}" if job.error else ""))
        return 0
    if not args.target:
        raise UserError(f"`jobs {args.action}` needs a {'kind' if args.action == 'submit' else 'job id'}")
    if args.action == "submit":
        job = queue.submit(args.target, parse_params(args.arg, as_json=True), device=args.device, root=args.root)
    else:
        job = getattr(queue, args.action)(args.target, args.root)
    return emit({"job": job.id, "status": job.status, "device": job.device, "path": str(job.path)})


def worker(args: argparse.Namespace) -> int:

    return work(args.device, args.root, idle_exit=args.idle_exit)


def register(sub) -> None:

    m = sub.add_parser("models", help="list the registered models, or a source's (torchvision, timm, factory)",
                       description="Models are named: a registered name, torchvision:<name>, timm:<name> or "
                       "factory:<package.module>:<function> (enabled with --factory), each with an optional input "
                       "size @<side> or @<H>x<W> (e.g. torchvision:densenet121@32).")
    m.add_argument("--source", default="registry",
                   help="which source's names to list: registry, torchvision, timm, factory or one you registered "
                   "(default: the registered ones, with their input size)")
    m.add_argument("--search", default="", help="only the names containing this text (case-insensitive)")
    add_factory_arg(m)
    m.set_defaults(func=models)
    d = sub.add_parser("datasets", help="list the data sets and the data root")
    d.add_argument("--data-root", default=None)
    d.set_defaults(func=datasets)
    sub.add_parser("criteria", help="list the saliency criteria, their descriptions and parameters").set_defaults(
        func=criteria)
    sub.add_parser("presets", help="list the plan presets, what each takes and needs").set_defaults(func=presets)
    p = sub.add_parser("runs", help="list the pruning runs")
    p.add_argument("--runs", default=None, help="runs root (default: $PRUNEKIT_RUNS or ./runs)")
    p.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    p.set_defaults(func=runs)
    p = sub.add_parser("export", help="export a run's pruned model (or a checkpoint) as safetensors/TorchScript/ONNX")
    p.add_argument("--run", default=None, help="a run directory")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--model", default=None, help=f"architecture (default: the checkpoint's): {MODEL_HELP}")
    add_factory_arg(p)
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=export)
    p = sub.add_parser("jobs", help="list, submit, cancel or resume background jobs (training, fine-tuning...)",
                       description="Background jobs run in a worker process, one at a time per device. `jobs` lists "
                       "them; `jobs submit finetune --arg run=runs/ID --arg epochs=3` queues one; `jobs cancel ID`, "
                       "`jobs resume ID`.")
    p.add_argument("action", nargs="?", default="list", choices=["list", "submit", "cancel", "resume"])
    p.add_argument("target", nargs="?", default=None, help="the job kind (submit) or job id (cancel, resume)")
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="a job argument (repeatable); VALUE is read as JSON when it parses (3, 0.01, true)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--root", default=None, help="jobs folder (default: $PRUNEKIT_JOBS or <runs root>/.jobs)")
    p.set_defaults(func=jobs)
    p = sub.add_parser("worker", help="run the queued jobs of one device (started by the jobs API; rarely by hand)")
    p.add_argument("--device", required=True)
    p.add_argument("--root", default=None)
    p.add_argument("--idle-exit", type=float, default=3.0, help="seconds without a job before exiting")
    p.set_defaults(func=worker)
