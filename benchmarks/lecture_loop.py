"""Benchmark: the lecture loop, run through the package as the dashboard runs it, step by step, on the bundled
ResNet-20 and the CIFAR-10 copy (targets on the quiet 2-core CPU: the whole loop <= 60 s; one sweep point <= 2.5x
one evaluation of the unpruned model on the same held-out images; the candidate evaluator >= 1 plan per second at
-50% FLOPs with 1,000 held-out and 1,024 recalibration images).

Steps: cold start (import prunekit, load the default model and the data), score sfm_entropy on the probe, a
uniform plan at -30% FLOPs and its predicted accuracy, prune it with recalibration (no latency), a sweep of 2
criteria x 4 targets with no fine-tuning and no latency, the curves' data. Then, apart from the loop, one
evaluation of the unpruned model on the sweep's held-out images (the unit of the sweep-point target) and the
evaluator's rate on distinct -50% plans of ResNet-20, ResNet-56 and VGG-16-BN (random weights for the last two:
the rate does not depend on them), what one ResNet-20 candidate costs step by step (prune, recalibrate, fold the BNs
into their convs, evaluate), the folded evaluation against the plain pruned model's on the same plans (folding is
adopted only within 0.1 points), and bf16 against fp32 on the same plans of the default model.

    python benchmarks/lecture_loop.py [--held-out 1000] [--out benchmarks/results/lecture_loop.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

T0 = time.perf_counter()  # the cold start counts the imports below

import torch  # noqa: E402
from common import RESULTS, load_average, write_result  # noqa: E402

from prunekit.criteria.probe import ProbeSpec  # noqa: E402
from prunekit.criteria.scores import score_model, to_tensors  # noqa: E402
from prunekit.data import DeviceLoader, held_out_set, load_arrays  # noqa: E402
from prunekit.defaults import EVAL_BATCH, PREDICTION, RECALIBRATION, SWEEP  # noqa: E402
from prunekit.models.checkpoints import DEFAULT_CHECKPOINT, load_checkpoint  # noqa: E402
from prunekit.models.metrics import evaluate, held_out_accuracy  # noqa: E402
from prunekit.models.zoo import build_model  # noqa: E402
from prunekit.pruning.evaluator import CandidateEvaluator  # noqa: E402
from prunekit.pruning.fold import fold_bn  # noqa: E402
from prunekit.pruning.predict import predict_accuracy  # noqa: E402
from prunekit.pruning.presets import get_preset  # noqa: E402
from prunekit.pruning.prune import Pruner  # noqa: E402
from prunekit.pruning.recalibrate import reestimate_bn  # noqa: E402
from prunekit.pruning.structure import structure  # noqa: E402
from prunekit.runs.compare import comparison  # noqa: E402
from prunekit.runs.records import list_runs, prune_run  # noqa: E402
from prunekit.runs.sweeps import SweepSpec, run_sweep  # noqa: E402

SIZE = (3, 32, 32)
TARGETS = {"loop_s": 60.0, "sweep_point_over_evaluation": 2.5, "evaluator_plans_per_s": 1.0}


def lecture_loop(held_out_n: int, root: str) -> dict:
    """The loop's steps, each timed (s), in one process: what a teacher clicks through."""
    steps: dict[str, float] = {}

    def step(name: str, t: float) -> float:
        steps[name] = round(time.perf_counter() - t, 3)
        return time.perf_counter()

    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    model.eval()
    train, test = load_arrays("cifar10", "train"), held_out_set("cifar10", held_out_n)
    t = step("cold_start", T0)
    entropy = to_tensors(score_model(model, "sfm_entropy", probe=ProbeSpec("cifar10")))
    t = step("score_sfm_entropy", t)
    struct = structure(model, SIZE)
    plan = get_preset("uniform").make(struct, "resnet20", target=0.3, by="flops", criterion="sfm_entropy",
                                      model=model, scores=entropy)
    predicted = predict_accuracy(model, plan.ratios, entropy, SIZE, train=train,
                                 held_out=held_out_set("cifar10", PREDICTION.n))
    t = step("plan_and_predicted_accuracy", t)
    run = prune_run(model, plan, entropy, arch="resnet20", num_classes=10, input_size=SIZE, root=root, data=test,
                    recalibrate=train, struct=struct, latency_batches=())
    t = step("prune_with_recalibration", t)
    spec = SweepSpec(criteria=("l1", "sfm_entropy"), targets=SWEEP.targets, runtimes=())
    points = run_sweep(model, "resnet20", spec, num_classes=10, input_size=SIZE, held_out=test, train=train,
                       probe=ProbeSpec("cifar10"), root=root)
    t = step("sweep_2x4", t)
    curves = comparison(list_runs(root), "flops", "recalibrated")
    step("curves", t)
    return {"steps_s": steps, "loop_s": round(sum(steps.values()), 2), "sweep_points": len(points),
            "curve_points": int(curves["sweep"].notna().sum()), "predicted_accuracy": round(predicted["accuracy"], 2),
            "pruned_accuracy": run.manifest["accuracy"]}


def evaluator_rate(model: torch.nn.Module, train, held_out, plans: int = 4) -> dict:
    """Distinct uniform -50% FLOPs plans (each with another random score draw) judged by one evaluator."""
    struct = structure(model, SIZE)
    ev = CandidateEvaluator(model, SIZE, held_out=held_out, train=train)
    ev.baseline()
    g, times = torch.Generator().manual_seed(0), []
    for _ in range(plans):
        scores = {n: torch.rand(m.out_channels, generator=g) for n, m in model.named_modules()
                  if isinstance(m, torch.nn.Conv2d)}
        plan = get_preset("uniform").make(struct, "x", target=0.5, by="flops", criterion="random", model=model,
                                          scores=scores)
        result = ev.evaluate(plan.ratios, scores)
        times.append(result["seconds"])
    mean = sum(times) / len(times)
    return {"plans": plans, "seconds": [round(s, 3) for s in times], "plans_per_s": round(1 / mean, 3)}


def step_costs(model: torch.nn.Module, train, held_out, repeat: int = 3) -> dict:
    """What one candidate costs, step by step (median of ``repeat``): prune a copy (Pruner: copy, cut, self-check),
    re-estimate BN on the recalibration images, fold the BNs into their convs, evaluate on the held-out images; l1,
    uniform -50% FLOPs. Also the evaluation of the same model unfolded."""
    struct, scores = structure(model, SIZE), to_tensors(score_model(model, "l1"))
    plan = get_preset("uniform").make(struct, "x", target=0.5, by="flops", criterion="l1", model=model, scores=scores)
    pruner = Pruner(model, SIZE)
    recal = DeviceLoader(train.subset(RECALIBRATION.n, seed=RECALIBRATION.seed), RECALIBRATION.batch_size, train=False)
    held = DeviceLoader(held_out, EVAL_BATCH, train=False)
    times: dict[str, list[float]] = {"prune": [], "recalibrate": [], "fold": [], "evaluate": [], "evaluate_unfolded": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        pruned = pruner.prune(plan.ratios, scores)[0].to(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        reestimate_bn(pruned, recal)
        t2 = time.perf_counter()
        evaluate(pruned, held)
        t3 = time.perf_counter()
        fold_bn(pruned, pruner.conv_bn, pruner.probe)
        pruned.to(memory_format=torch.channels_last)
        t4 = time.perf_counter()
        evaluate(pruned, held)
        for step, dt in zip(times, (t1 - t0, t2 - t1, t4 - t3, time.perf_counter() - t4, t3 - t2)):
            times[step].append(dt)
    return {step: round(statistics.median(v), 3) for step, v in times.items()}


def bn_statistics_cost(repeat: int = 10) -> dict:
    """The recalibration's largest cost, BatchNorm's statistics in training mode: milliseconds per call (best of
    ``repeat``) on a (256, C, 32, 32) channels_last batch at C = 16 (an unpruned ResNet-20 stage) and C = 11 (the
    same stage at -50% FLOPs), and contiguous at C = 11."""
    def best(x: torch.Tensor) -> float:
        c = x.shape[1]
        mean, var, ones, zeros = torch.zeros(c), torch.ones(c), torch.ones(c), torch.zeros(c)
        times = []
        with torch.no_grad():
            for _ in range(repeat + 1):
                t = time.perf_counter()
                torch.nn.functional.batch_norm(x, mean, var, ones, zeros, True, 0.1, 1e-5)
                times.append(time.perf_counter() - t)
        return round(min(times[1:]) * 1e3, 2)
    g = torch.Generator().manual_seed(0)
    x16, x11 = torch.randn(256, 16, 32, 32, generator=g), torch.randn(256, 11, 32, 32, generator=g)
    return {"channels_last_16": best(x16.to(memory_format=torch.channels_last)),
            "channels_last_11": best(x11.to(memory_format=torch.channels_last)), "contiguous_11": best(x11)}


def fold_check(model: torch.nn.Module, train, held_out, targets=(0.3, 0.5, 0.7)) -> dict:
    """The same l1 plans (uniform, each target) judged by the evaluator (BNs folded) and step by step on the plain
    pruned model (Pruner -> reestimate_bn -> evaluate): each accuracy and the largest gap in points; folding is
    adopted only where the gap is <= 0.1."""
    struct, scores = structure(model, SIZE), to_tensors(score_model(model, "l1"))
    ev = CandidateEvaluator(model, SIZE, held_out=held_out, train=train)
    pruner = Pruner(model, SIZE)
    recal = DeviceLoader(train.subset(RECALIBRATION.n, seed=RECALIBRATION.seed), RECALIBRATION.batch_size, train=False)
    held = DeviceLoader(held_out, EVAL_BATCH, train=False)
    folded, plain = [], []
    for target in targets:
        ratios = get_preset("uniform").make(struct, "x", target=target, by="flops", criterion="l1", model=model,
                                            scores=scores).ratios
        folded.append(ev.evaluate(ratios, scores)["accuracy"])
        pruned = pruner.prune(ratios, scores)[0]
        reestimate_bn(pruned, recal)
        plain.append(evaluate(pruned, held)["accuracy"])
    gap = max(abs(a - b) for a, b in zip(folded, plain))
    return {"targets": list(targets), "folded": folded, "plain": plain, "largest_gap_points": round(gap, 3),
            "equal_within_0.1": gap <= 0.1}


def precision_check(model: torch.nn.Module, train, held_out, targets=(0.3, 0.5, 0.7)) -> dict:
    """The same l1 plans (uniform, each target) judged in fp32 and in bf16 (channels_last, autocast): accuracy of
    each, its largest gap in points and the time of each; bf16 is worth adopting where the gap is <= 0.1."""
    struct = structure(model, SIZE)
    scores = to_tensors(score_model(model, "l1"))
    out = {}
    for precision in ("fp32", "bf16"):
        ev = CandidateEvaluator(model, SIZE, held_out=held_out, train=train, precision=precision)
        rows = [ev.evaluate(get_preset("uniform").make(struct, "x", target=target, by="flops", criterion="l1",
                                                       model=model, scores=scores).ratios, scores)
                for target in targets]
        out[precision] = {"accuracy": [r["accuracy"] for r in rows], "seconds": [round(r["seconds"], 3) for r in rows]}
    gaps = [abs(a - b) for a, b in zip(out["fp32"]["accuracy"], out["bf16"]["accuracy"])]
    return {"targets": list(targets), **out, "largest_gap_points": round(max(gaps), 3),
            "bf16_speedup": round(sum(out["fp32"]["seconds"]) / sum(out["bf16"]["seconds"]), 2),
            "equal_within_0.1": max(gaps) <= 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--out", default=str(RESULTS / "lecture_loop.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as root:
        loop = lecture_loop(args.held_out, root)
    train = load_arrays("cifar10", "train")
    test = held_out_set("cifar10", args.held_out)
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    model.eval()
    t = time.perf_counter()
    held_out_accuracy(model, test)
    evaluation_s = time.perf_counter() - t
    point_s = loop["steps_s"]["sweep_2x4"] / loop["sweep_points"]
    rates = {"resnet20": evaluator_rate(model, train, test)}
    for arch in ("resnet56", "vgg16_bn"):
        torch.manual_seed(0)
        rates[arch] = evaluator_rate(build_model(arch).eval(), train, test, plans=2)
    rates["resnet20"]["steps_s"] = step_costs(model, train, test)
    rates["resnet20"]["bn_statistics_ms"] = bn_statistics_cost()
    precision, folding = precision_check(model, train, test), fold_check(model, train, test)
    torch.manual_seed(0)
    resnet56 = build_model("resnet56").eval()  # no trained ResNet-56 is bundled: random weights, chance accuracy,
    # but the gap between two ways of computing the same model still counts the images whose label changes
    precision["resnet56_random_weights"] = precision_check(resnet56, train, test)
    folding["resnet56_random_weights"] = fold_check(resnet56, train, test)
    result = {"held_out": args.held_out, "precision": precision, "folding": folding,
              "recalibration_images": RECALIBRATION.n, "loop": loop,
              "unpruned_evaluation_s": round(evaluation_s, 3), "sweep_point_s": round(point_s, 3),
              "sweep_point_over_evaluation": round(point_s / evaluation_s, 2), "evaluator": rates,
              "targets": TARGETS,
              "met": {"loop_s": loop["loop_s"] <= TARGETS["loop_s"],
                      "sweep_point_over_evaluation": point_s / evaluation_s <= TARGETS["sweep_point_over_evaluation"],
                      "evaluator_plans_per_s": rates["resnet20"]["plans_per_s"] >= TARGETS["evaluator_plans_per_s"]},
              "load_average": load_average(load_before)}
    if not result["met"]["evaluator_plans_per_s"]:
        result["evaluator_missed_because"] = evaluator_note(rates["resnet20"], precision)
    write_result(result, args.out)


def evaluator_note(resnet20: dict, precision: dict) -> str:
    """Why the evaluator misses its rate, from this run's own figures."""
    steps, bn = resnet20["steps_s"], resnet20["bn_statistics_ms"]
    per_plan = 1 / resnet20["plans_per_s"]
    return (f"one candidate takes {per_plan:.2f} s: recalibration {steps['recalibrate']:.2f} s (1,024 images in "
            f"training mode), evaluation {steps['evaluate']:.2f} s (1,000 images, BNs folded), pruning "
            f"{steps['prune']:.2f} s. Half of the recalibration is BatchNorm's statistics: PyTorch's CPU kernel takes "
            f"{bn['channels_last_11']} ms per call on a channels_last batch of 11 channels (a stage at -50% FLOPs) "
            f"against {bn['channels_last_16']} ms at 16 ({bn['contiguous_11']} ms contiguous, but the convolutions "
            f"are slower there). bf16 would be {precision['bf16_speedup']}x faster but moves the accuracy by "
            f"{precision['largest_gap_points']} points, over the 0.1 allowed.")


if __name__ == "__main__":
    main()
