"""The pruning path: ``score`` (a CSV of per-filter scores) -> ``plan`` (a preset's JSON plan and its estimate) ->
``prune`` (a run directory) and ``sensitivity`` (per-group curves for the sensitivity preset)."""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import replace
from pathlib import Path

from prunekit.analysis.reliability import probe_reliability, summarize
from prunekit.cli.common import (
    add_criterion_args,
    add_model_args,
    add_probe_args,
    bar,
    check_data,
    emit,
    input_size,
    load_model,
    parse_params,
    probe_spec,
)
from prunekit.criteria import criterion_class, get_criterion, list_criteria
from prunekit.criteria.scores import read_scores, score_model, to_tensors
from prunekit.data import DataNotFoundError, held_out_set, load_arrays
from prunekit.defaults import (
    HELD_OUT,
    LATENCY_BATCHES,
    LATENCY_MODEL,
    LATENCY_REPEAT,
    RECALIBRATION,
    ROUND_TO,
    SENSITIVITY,
    SWEEP,
    TARGET_BY,
)
from prunekit.errors import UserError
from prunekit.pruning.plan import Plan
from prunekit.pruning.presets import BUDGETS, BY, LATENCY, get_preset, list_presets
from prunekit.pruning.search import candidates_frame
from prunekit.pruning.sensitivity import read_sensitivity
from prunekit.pruning.sensitivity import sensitivity as curves
from prunekit.pruning.structure import estimate, structure
from prunekit.runs.latency_model import latency_model
from prunekit.runs.records import accuracy_summary, list_runs, prune_run
from prunekit.runs.runtimes import runtime_labels, runtime_names
from prunekit.runs.sweeps import SweepSpec, run_sweep

__all__ = ["register"]


def _write_csv(df, out: str) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def score(args: argparse.Namespace) -> int:

    crit = get_criterion(args.criterion, **parse_params(args.param))
    model, arch, _, _ = load_model(args)
    if crit.needs_data:
        check_data(args, model, arch, labels=crit.needs_labels)
    with bar(crit.name) as progress:
        df = score_model(model, crit.name, crit.config, layers=args.layers, probe=probe_spec(args),
                         cache=not args.no_cache,
                         progress=progress)
    out = _write_csv(df, args.out)
    if crit.caveat:
        print(f"note: {crit.caveat}", file=sys.stderr)
    result = {"criterion": repr(crit), "layers": int(df["layer"].nunique()), "filters": len(df),
              "cached": df.attrs["cached"], "device": str(next(model.parameters()).device), "out": str(out)}
    if crit.needs_data and not args.no_reliability:
        result["reliability"] = _reliability(model, crit, args, out)
    return emit(result)


def _reliability(model, crit, args: argparse.Namespace, out: Path) -> dict:
    """Score again on a disjoint probe, print how reproducible each layer's ranking is, write it beside the
    scores (``<out>.reliability.csv``); -> the summary."""

    with bar(f"reliability ({crit.name})") as progress:
        table = probe_reliability(model, crit.name, crit.config, probe_spec(args), cache=not args.no_cache,
                                  progress=progress)
    path = _write_csv(table, str(out.with_suffix(".reliability.csv")))
    summary = summarize(table)
    a = table.attrs
    print(f"reliability of the ranking: the same criterion on two {'disjoint ' if a['disjoint'] else ''}probes "
          f"of {a['n']} images (seeds {a['seeds'][0]} and {a['seeds'][1]}); per-layer Spearman median "
          f"{summary['median_spearman']:.2f}, min {summary['min_spearman']:.2f}; bottom-30% overlap median "
          f"{summary['median_overlap']:.2f} (1 = the same ranking, 0 = unrelated: near 0, the ranking is sampling "
          "noise)", file=sys.stderr)
    print(table[["layer", "filters", "spearman", "overlap"]].to_string(index=False, float_format="%.2f"),
          file=sys.stderr)
    return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}, "n": a["n"],
            "seeds": a["seeds"], "table": str(path)}


def _scores(args: argparse.Namespace, model, arch: str, criterion: str, params: dict) -> dict:
    """{conv: scores} from --scores CSV, else computed (and cached) with ``criterion`` on the probe options (the
    model checked against the data first when the criterion reads images)."""

    if args.scores:
        return read_scores(args.scores, model)
    crit = criterion_class(criterion)
    if crit.needs_data:
        check_data(args, model, arch, labels=crit.needs_labels)
    with bar(f"scores ({criterion})") as progress:
        return to_tensors(score_model(model, criterion, params, probe=probe_spec(args), progress=progress))


def plan(args: argparse.Namespace) -> int:

    preset = get_preset(args.preset)
    curves = read_sensitivity(args.sensitivity) if args.sensitivity and ("sensitivity" in preset.needs
                                                                         or preset.judges) else None
    model, arch, _, _ = load_model(args)
    struct = structure(model, input_size(arch))
    criterion, params = args.criterion, parse_params(args.param)
    inputs = {"model": model}
    if "scores" in preset.needs:
        inputs["scores"] = _scores(args, model, arch, criterion, params)
    if curves is not None:
        inputs["sensitivity"] = curves
    value = getattr(args, preset.knob.name) if preset.knob else None
    options = {p.name: getattr(args, p.name) for p in preset.params if getattr(args, p.name) is not None}
    if "train" in preset.needs:
        inputs["train"] = load_arrays(args.data, "train", args.data_root)
    if args.by == LATENCY:
        with bar(f"latency model ({args.runtime}, batch {args.batch})") as progress:
            inputs["latency"] = latency_model(model, input_size(arch), runtime=args.runtime, batch=args.batch,
                                              round_to=args.round_to, struct=struct, progress=progress)
    with bar(preset.name) if preset.judges else contextlib.nullcontext() as progress:
        result = preset.make(struct, arch, value=value, target=args.target, by=args.by, exclude=args.exclude,
                             criterion=criterion, criterion_params=params, round_to=args.round_to, **inputs,
                             **options, **({"progress": progress} if preset.judges else {}))
    result.save(args.out)
    est = estimate(struct, result.ratios, result.round_to)
    return emit({"preset": args.preset, "arch": arch, "criterion": result.criterion, "groups": len(result.ratios),
                 "round_to": result.round_to,
                 "params": [est.params_before, est.params], "macs": [est.macs_before, est.macs],
                 "params_reduction": round(est.params_reduction, 4), "flops_reduction": round(est.macs_reduction, 4),
                 **_latency_summary(result.preset), **_search_summary(result.preset, args.out),
                 "unprunable": result.unprunable(struct), "out": args.out})


def _latency_summary(record: dict) -> dict:
    """{"latency_ms": [before, predicted], "runtime", "batch"} of a latency-budgeted plan, else {}."""
    lat = record.get("latency")
    return {} if not lat else {"latency_ms": [lat["before_ms"], lat["predicted_ms"]], "runtime": lat["runtime"],
                               "batch": lat["batch"], "latency_reduction": record.get("reached")}


def _search_summary(record: dict, out: str) -> dict:
    """A searched plan's candidates written beside it (``<out>.candidates.csv``) and its summary, else {}."""
    found = record.get("search")
    if not found:
        return {}
    table = _write_csv(candidates_frame(found), str(Path(out).with_suffix(".candidates.csv")))
    return {"search": {"judged": found["judged"], "best": found["best"], "accuracy": found["accuracy"],
                       "stopped": found["stopped"], "seconds": found["seconds"], "skipped": found["skipped"],
                       "candidates": str(table)}}


def prune(args: argparse.Namespace) -> int:

    loaded = Plan.load(args.plan)
    if args.round_to is not None:
        loaded = replace(loaded, round_to=args.round_to)  # checked again by the plan
    if not args.checkpoint and not args.model:
        args.model = loaded.arch
    model, arch, classes, notes = load_model(args)
    if arch != loaded.arch:
        raise UserError(f"the plan was made for {loaded.arch}, the model is {arch}")
    scores = _scores(args, model, arch, loaded.criterion, loaded.criterion_params)
    data = held_out_set(args.data, args.n, args.data_root) if args.n else None
    with bar("prune") as progress:
        run = prune_run(model, loaded, scores, arch=arch, num_classes=classes, input_size=input_size(arch),
                        root=args.runs, checkpoint=args.checkpoint, data=data, recalibrate=_recalibration(args),
                        latency_batches=() if args.no_latency else LATENCY_BATCHES, repeat=args.repeat,
                        runtimes=args.runtimes, progress=progress)
    if notes:  # how the weights were initialised, a replaced head
        run.update(model={**run.manifest["model"], **notes})
    row = list_runs(run.path.parent).set_index("run").loc[run.manifest["id"]]
    return emit({"run": str(run.path), "status": run.status, "round_to": loaded.round_to,
                 "params": [int(row.params_before), int(row.params)],
                 "flops": [int(row.flops_before), int(row.flops)], **accuracy_summary(run.manifest)})


def _recalibration(args: argparse.Namespace):
    """The training images BatchNorm statistics are recalibrated on; None with --no-recalibrate, or (said on
    stderr, and recorded as no recalibration) when the data set is not there."""

    if args.no_recalibrate:
        return None
    try:
        return load_arrays(args.data, "train", args.data_root)
    except DataNotFoundError as exc:
        print(f"note: not recalibrating the BatchNorm statistics, there are no training images: {exc}",
              file=sys.stderr)
        return None


def sensitivity(args: argparse.Namespace) -> int:

    model, arch, _, _ = load_model(args)
    check_data(args, model, arch, labels=True)
    scores = _scores(args, model, arch, args.criterion, parse_params(args.param))
    with bar("sensitivity") as progress:
        df = curves(model, scores, held_out_set(args.data, args.n, args.data_root), ratios=args.ratios,
                    groups=args.groups, recalibrate=_recalibration(args), round_to=args.round_to,
                    cache=not args.no_cache, progress=progress)
    out = _write_csv(df, args.out)
    return emit({"groups": int(df["group"].nunique()), "rows": len(df), "cached": df.attrs["cached"],
                 "out": str(out)})


def register(sub) -> None:

    s = sub.add_parser("score", help="score every filter of a model with a criterion; writes a CSV")
    add_model_args(s, required=True)
    s.add_argument("--criterion", required=True, choices=list_criteria())
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a criterion parameter (repeatable); see `python -m prunekit criteria`")
    s.add_argument("--layers", nargs="+", default=None, help="conv names to score (default: every conv)")
    add_probe_args(s)
    s.add_argument("--no-cache", action="store_true", help="recompute even if the scores are cached")
    s.add_argument("--no-reliability", action="store_true",
                   help="skip the reliability check (a data-driven criterion is scored again on a disjoint probe of "
                   "as many images, seed + 1, and each layer's two rankings compared)")
    s.add_argument("--out", required=True, help="output CSV (layer, filter, criterion, score, rank)")
    s.set_defaults(func=score)

    _register_plan(sub)
    register_sweep(sub)

    p = sub.add_parser("prune", help="prune by a plan; records a run (manifest, pruned model) under the runs root")
    add_model_args(p)
    add_criterion_args(p, None)
    p.add_argument("--plan", required=True, help="a plan JSON written by `plan`")
    add_round_to_arg(p, "(default: the plan's own round_to; given, it replaces it)", None)
    p.add_argument("--n", type=int, default=HELD_OUT.n,
                   help=f"held-out test images for accuracy (default {HELD_OUT.n}; 0: do not evaluate)")
    p.add_argument("--runs", default=None, help="runs root (default: $PRUNEKIT_RUNS or ./runs)")
    add_latency_args(p)
    _recalibration_arg(p)
    p.set_defaults(func=prune)

    p = sub.add_parser("sensitivity", help="prune each group alone at several ratios and evaluate; writes a CSV")
    add_model_args(p)
    add_criterion_args(p, "l1")
    p.add_argument("--n", type=int, default=SENSITIVITY.n, help=f"held-out test images (default {SENSITIVITY.n})")
    p.add_argument("--ratios", type=float, nargs="+", default=list(SENSITIVITY.ratios))
    p.add_argument("--groups", nargs="+", default=None, help="group roots (default: every prunable group)")
    p.add_argument("--no-cache", action="store_true")
    add_round_to_arg(p, "(each ratio keeps what a plan with this rounding keeps; give the plan the same)")
    _recalibration_arg(p)
    p.add_argument("--out", required=True, help="output CSV (group, ratio, kept, accuracy, loss, params, macs)")
    p.set_defaults(func=sensitivity)


def _recalibration_arg(p: argparse.ArgumentParser) -> None:

    p.add_argument("--no-recalibrate", action="store_true",
                   help=f"do not re-estimate the pruned models' BatchNorm statistics (by default on {RECALIBRATION.n} "
                   f"training images, seed {RECALIBRATION.seed}, before they are evaluated)")


def add_latency_args(p: argparse.ArgumentParser, repeat: bool = True) -> None:
    """--no-latency, --runtimes (and --repeat): whether and where a run's latency is timed (prunekit.runs.runtimes)."""

    if repeat:
        p.add_argument("--repeat", type=int, default=LATENCY_REPEAT, help="timed runs per latency measurement")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    labels = runtime_labels()
    p.add_argument("--runtimes", nargs="+", choices=list(labels), default=list(labels),
                   help="where latency is timed: " + ", ".join(f"{name} ({label})" for name, label in labels.items())
                   + " (ONNX Runtime: the model exported to ONNX and checked equal first; adds a few seconds). "
                   "Default: every one")


def add_round_to_arg(p: argparse.ArgumentParser, note: str, default: int | None = ROUND_TO) -> None:
    """--round-to N: the rounding of every pruned group's kept filters (:func:`prunekit.pruning.ratios.kept_channels`)."""
    p.add_argument("--round-to", type=int, default=default, metavar="N",
                   help="round every pruned group's kept filters to a multiple of N (nearest; at least N; a group "
                        "narrower than N is not rounded): CPUs compute convs in blocks of 16 floats (AVX-512) or 8 "
                        f"(AVX2), so widths that are multiples of 16 or 8 run faster for their MACs {note}"
                        + (f"; default {default} (no rounding)" if default is not None else ""))


def _register_plan(sub) -> None:
    """`plan`: the preset menu, each preset's knob and options, all from the preset registry."""

    presets = [get_preset(name) for name in list_presets()]
    p = sub.add_parser("plan", help="build a pruning plan with a preset; writes JSON and prints its estimate",
                       description="Presets: " + "; ".join(f"{x.name}: {x.help}" for x in presets))
    add_model_args(p)
    add_criterion_args(p, "l1")
    p.add_argument("--preset", required=True, choices=list_presets())
    for knob in {x.knob.name: x.knob for x in presets if x.knob}.values():
        users = ", ".join(x.name for x in presets if x.knob and x.knob.name == knob.name)
        p.add_argument(f"--{knob.name}", type=float, default=None, help=f"{users}: {knob.doc}; {knob.allowed()}")
    for option in {o.name: (o, x.name) for x in presets for o in x.params}.values():
        param, owner = option
        p.add_argument(f"--{param.name}", default=None, choices=param.choices,
                       help=f"{owner}: {param.doc} (default {param.default})")
    p.add_argument("--target", type=float, default=None, help="fraction of FLOPs (or params, --by) to remove")
    p.add_argument("--by", default=TARGET_BY, choices=BUDGETS,
                   help=f"what --target counts (default {TARGET_BY}); latency: the latency --runtime predicts at "
                        "--batch (a latency model of this model, measured once per runtime, batch and --round-to and "
                        "cached)")
    p.add_argument("--runtime", default=LATENCY_MODEL.runtime, choices=runtime_names(),
                   help=f"--by latency: where latency counts (default {LATENCY_MODEL.runtime})")
    p.add_argument("--batch", type=int, default=LATENCY_MODEL.batch,
                   help=f"--by latency: the batch size it counts at (default {LATENCY_MODEL.batch})")
    p.add_argument("--sensitivity", default=None, help="sensitivity (and search, as a start): a CSV written by "
                   "`sensitivity`")
    p.add_argument("--exclude", nargs="+", default=[], help="convs to leave unpruned (with their coupled group)")
    add_round_to_arg(p, "(a --target is solved on the rounded estimate)")
    p.add_argument("--out", required=True, help="the plan's JSON file")
    p.set_defaults(func=plan)


def sweep(args: argparse.Namespace) -> int:

    spec = SweepSpec(criteria=tuple(args.criteria), targets=tuple(args.targets), preset=args.preset, by=args.by,
                     finetune_epochs=args.finetune_epochs, finetune_subset=args.finetune_subset,
                     round_to=args.round_to, runtimes=() if args.no_latency else tuple(args.runtimes),
                     plain=args.plain)
    model, arch, classes, notes = load_model(args)
    held_out = held_out_set(args.data, args.n, args.data_root) if args.n else None
    with bar("sweep") as progress:
        runs = run_sweep(model, arch, spec, num_classes=classes, input_size=input_size(arch), held_out=held_out,
                         train=_recalibration(args), probe=probe_spec(args), root=args.runs,
                         checkpoint=args.checkpoint, progress=progress, sweep_id=args.resume)
    for run in runs if notes else ():  # how the weights were initialised, a replaced head
        run.update(model={**run.manifest["model"], **notes})
    return emit({"sweep": runs[0].manifest["sweep"]["id"], "runs": [str(r.path) for r in runs],
                 "points": len(runs)})


def register_sweep(sub) -> None:

    p = sub.add_parser("sweep", help="criteria x targets, each pruned, recalibrated and evaluated: accuracy-vs-FLOPs "
                       "curves (every point a run)")
    add_model_args(p)
    p.add_argument("--criteria", nargs="+", required=True, choices=list_criteria())
    p.add_argument("--targets", nargs="+", type=float, required=True, help="fractions of FLOPs (or --by params) to "
                   f"remove, e.g. {' '.join(map(str, SWEEP.targets))}")
    p.add_argument("--preset", default=SWEEP.preset, choices=list_presets(),
                   help=f"the allocation (default {SWEEP.preset})")
    p.add_argument("--by", default=TARGET_BY, choices=BY, help=f"what --targets count (default {TARGET_BY})")
    p.add_argument("--finetune-epochs", type=int, default=SWEEP.finetune_epochs,
                   help=f"a brief fine-tuning of every point (default {SWEEP.finetune_epochs}; 0: none)")
    p.add_argument("--finetune-subset", type=int, default=SWEEP.finetune_subset,
                   help=f"training images per fine-tuning epoch (default {SWEEP.finetune_subset}; 0: all)")
    add_round_to_arg(p, "(each target is solved on the rounded estimate)")
    add_latency_args(p, repeat=False)
    p.add_argument("--plain", action="store_true", default=SWEEP.plain,
                   help="also measure each point's accuracy right after pruning, before BatchNorm recalibration")
    p.add_argument("--resume", default=None, metavar="SWEEP_ID",
                   help="continue the sweep of this id (the 'sweep' a stopped run printed or its runs record): the "
                        "points it finished stay, the others are made")
    p.add_argument("--n", type=int, default=HELD_OUT.n, help=f"held-out test images (default {HELD_OUT.n})")
    p.add_argument("--runs", default=None, help="runs root (default: $PRUNEKIT_RUNS or ./runs)")
    add_probe_args(p, "probe-")
    _recalibration_arg(p)
    p.set_defaults(func=sweep)
