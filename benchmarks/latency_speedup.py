"""Benchmark: measured latency speedup of pruned models against their MAC reduction, in PyTorch eager and in ONNX
Runtime on the CPU.

VGG-16-BN at the published SFM budget (-66.7% FLOPs) and ResNet-56 at about 2x fewer MACs (uniform ratios
solved for -50% FLOPs), filters chosen by L1, pruned with Torch-Pruning; then ResNet-56 again with every kept width
rounded to a multiple of 16 or 8 (the plan's ``round_to``, :mod:`prunekit.pruning.ratios`): the uniform target solved on
the rounded estimate (round_to 16: widths 16/16/16, 2.23x fewer MACs; 8: 8/24/48, 2.20x) and the uniform ratio 0.5
at round_to 16 (widths 16/16/32, 1.97x). Latency is the median of repeated
eval-mode forwards at batch 1 and 64; the original and the pruned model in both runtimes are timed round-robin in
one run. PyTorch eager runs on --device, under fixed malloc thresholds (:func:`prunekit.models.metrics.steady_allocator`,
recorded as ``allocator``); ONNX Runtime on the CPU with prunekit.runs.runtimes.SESSION (the exported
model checked equal to the module first). Target: at batch 64, speedup >= 0.8 x the MAC
reduction factor in at least one runtime. For ResNet-56, ``why`` holds a table of why it falls short:
per stage (by feature-map side) its channels, MAC share and MAC reduction (also with every conv's channels padded
to the CPU's vector block, as oneDNN's and ONNX Runtime's blocked layouts do), its share of the time and measured
speedup in each runtime, and ONNX Runtime's time per operator type (fixed costs: layout reorders, adds, pooling,
the linear head).

    python benchmarks/latency_speedup.py [--repeat 10] [--rounds 3] [--threads 0] [--device cuda|cpu] [--rows ...]

``results[name]["batch1"]`` / ``["batch64"]`` are PyTorch eager on --device (read by gpu_report.py);
``results[name]["onnxruntime"]`` the same keys in ONNX Runtime (None, with the reason, when its export failed).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict

import torch
from common import RESULTS, cpu_name, load_average, write_result

from prunekit.criteria import get_criterion
from prunekit.defaults import LATENCY_BATCHES, LATENCY_REPEAT
from prunekit.models.metrics import best_device, count_macs, latency_ms, layer_table, steady_allocator
from prunekit.models.zoo import build_model, model_info
from prunekit.pruning.presets import get_preset
from prunekit.pruning.prune import prune_model
from prunekit.runs.runtime_onnx import SESSION, checked_session, onnx_bytes, ort_latency_ms, ort_session
from prunekit.runs.runtimes import vector_block
from prunekit.pruning.structure import estimate, structure

TARGET = 0.8
RUNTIMES = ("eager", "onnxruntime")


ROWS = {  # row: (model, preset, its arguments)
    "vgg16_bn": ("vgg16_bn", "vgg16_published", {}),
    "resnet56": ("resnet56", "uniform", {"target": 0.5}),
    "resnet56_round_to_16": ("resnet56", "uniform", {"target": 0.5, "round_to": 16}),
    "resnet56_round_to_16_ratio_0.5": ("resnet56", "uniform", {"value": 0.5, "round_to": 16}),
    "resnet56_round_to_8": ("resnet56", "uniform", {"target": 0.5, "round_to": 8}),
}


def _timer(model, session, runtime: str, size, batch: int, repeat: int) -> float:
    if runtime == "eager":
        return latency_ms(model, size, batch, repeat=repeat)
    return ort_latency_ms(session, size, batch, repeat=repeat)


def _time_pairs(models: dict, sessions: dict, size, repeat: int, rounds: int) -> dict:
    """{runtime: {batchB: {original_ms, pruned_ms, speedup}}}: every (runtime, model) timed once per round."""
    out: dict = {}
    for batch in LATENCY_BATCHES:
        times = defaultdict(list)
        for _ in range(rounds):  # round-robin, so a change of load hits all alike
            for runtime in RUNTIMES:
                if runtime == "onnxruntime" and None in sessions.values():
                    continue
                for which in ("original", "pruned"):
                    times[runtime, which].append(_timer(models[which], sessions[which], runtime, size, batch, repeat))
        for runtime in RUNTIMES:
            if (runtime, "original") in times:
                t0, t1 = statistics.median(times[runtime, "original"]), statistics.median(times[runtime, "pruned"])
                out.setdefault(runtime, {})[f"batch{batch}"] = {
                    "original_ms": round(t0, 3), "pruned_ms": round(t1, 3), "speedup": round(t0 / t1, 3)}
    return out


def _stage_macs(model, size, block: int) -> dict:
    """{feature-map side: [MACs, MACs with conv channels padded to ``block``]} (side 1: the linear head)."""
    stages: dict = defaultdict(lambda: [0, 0])
    pad = lambda c: -(-c // block) * block  # noqa: E731
    for row in layer_table(model, size).to_dict("records"):
        conv = row["type"] != "linear"
        side = int(row["output"].split("x")[-1]) if conv else 1
        scale = pad(row["in"]) * pad(row["out"]) / (row["in"] * row["out"]) if conv else 1.0
        stages[side][0] += row["macs"]
        stages[side][1] += round(row["macs"] * scale)
    return stages


def _eager_stage_ms(model, size, batch: int, repeat: int) -> dict:
    """{side: median ms} of a ResNet's forward split at layer2, layer3 and avgpool (sides 32, 16, 8; 1: the head)."""
    marks: list = []
    hooks = [model.get_submodule(n).register_forward_pre_hook(lambda m, i: marks.append(time.perf_counter()))
             for n in ("layer2", "layer3", "avgpool")]
    x = torch.randn(batch, *size, device=next(model.parameters()).device)
    spans = defaultdict(list)
    with torch.no_grad():
        for i in range(repeat + 2):
            marks.clear()
            t0 = time.perf_counter()
            model(x)
            ends = [t0, *marks, time.perf_counter()]
            if i >= 2:
                for side, a, b in zip((32, 16, 8, 1), ends, ends[1:]):
                    spans[side].append(1000 * (b - a))
    for h in hooks:
        h.remove()
    return {side: statistics.median(v) for side, v in spans.items()}


def _ort_profile(model, size, batch: int, repeat: int) -> tuple[dict, dict]:
    """({side: ms per run}, {operator type: ms per run}) from ONNX Runtime's own profile of ``repeat`` runs."""
    model = model.cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(onnx_bytes(model, torch.randn(2, *size)), profile=os.path.join(tmp, "ort"))
        x = torch.randn(batch, *size).numpy()
        for _ in range(repeat):
            session.run(None, {session.get_inputs()[0].name: x})
        events = json.load(open(session.end_profiling()))
    by_side, by_op = defaultdict(float), defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        shape = next(iter(e["args"]["output_type_shape"][0].values()))
        side = shape[-1] if len(shape) >= 4 and shape[-1] > 1 else 1
        by_side[side] += e["dur"] / 1000 / repeat
        by_op[e["args"]["op_name"]] += e["dur"] / 1000 / repeat
    return dict(by_side), dict(by_op)


def _share(d: dict) -> dict:
    total = sum(d.values()) or 1.0
    return {k: round(v / total, 3) for k, v in d.items()}


def why_table(model, pruned, size, repeat: int) -> dict:
    """The table of why ResNet-56's speedup falls short of its MAC reduction, at batch 64 (see the docstring)."""
    block = vector_block()
    macs = {k: _stage_macs(m, size, block) for k, m in (("original", model), ("pruned", pruned))}
    widths = {k: defaultdict(set) for k in macs}
    for k, m in (("original", model), ("pruned", pruned)):
        for row in layer_table(m, size).to_dict("records"):
            if row["type"] != "linear":
                widths[k][int(row["output"].split("x")[-1])].add(row["out"])
    eager = {k: _eager_stage_ms(m, size, 64, repeat) for k, m in (("original", model), ("pruned", pruned))}
    ort = {k: _ort_profile(m, size, 64, repeat) for k, m in (("original", model), ("pruned", pruned))}
    total_macs = sum(v[0] for v in macs["original"].values())
    e_share, o_share = _share(eager["original"]), _share(ort["original"][0])
    rows = []
    for side in (32, 16, 8, 1):
        m0, m1 = macs["original"][side], macs["pruned"][side]
        rows.append({
            "stage": {32: "32x32: stem + layer1", 16: "16x16: layer2", 8: "8x8: layer3", 1: "head: pool + fc"}[side],
            "conv_widths_before": sorted(widths["original"][side]), "conv_widths_after": sorted(widths["pruned"][side]),
            "mac_share": round(m0[0] / total_macs, 3), "mac_reduction": round(m0[0] / max(m1[0], 1), 3),
            f"mac_reduction_padded_to_{block}": round(m0[1] / max(m1[1], 1), 3),
            "eager_time_share": e_share.get(side),
            "eager_speedup": round(eager["original"][side] / eager["pruned"][side], 3),
            "ort_time_share": o_share.get(side),
            "ort_speedup": round(ort["original"][0].get(side, 0) / max(ort["pruned"][0].get(side, 0), 1e-9), 3)})
    ops = sorted(set(ort["original"][1]) | set(ort["pruned"][1]), key=lambda o: -ort["original"][1].get(o, 0))
    op_rows = [{"op": op, "time_share_before": _share(ort["original"][1]).get(op, 0.0),
                "ms_before": round(ort["original"][1].get(op, 0.0), 3),
                "ms_after": round(ort["pruned"][1].get(op, 0.0), 3)}
               for op in ops]
    padded = sum(v[1] for v in macs["original"].values()) / sum(v[1] for v in macs["pruned"].values())
    return {"batch": 64, "vector_block": block, "stages": rows, "onnxruntime_ops": op_rows,
            f"mac_reduction_padded_to_{block}": round(padded, 3)}


def _measure(row_name: str, device: torch.device, repeat: int, rounds: int) -> dict:
    name, preset, arguments = ROWS[row_name]
    model = build_model(name).eval()
    size = model_info(name).input_size
    struct = structure(model, size)
    plan = get_preset(preset).make(struct, name, **arguments)
    pruned, _ = prune_model(model, plan.ratios, get_criterion("l1").score(model), size, round_to=plan.round_to)
    pruned.eval()
    sessions, records = {}, {}
    for which, m in (("original", model), ("pruned", pruned)):
        sessions[which], records[which] = checked_session(m, size)
    models = {"original": model.to(device), "pruned": pruned.to(device)}
    macs0, macs1 = count_macs(model, size), count_macs(pruned, size)
    assert macs1 == estimate(struct, plan.ratios, plan.round_to).macs
    factor = macs0 / macs1
    timed = _time_pairs(models, sessions, size, repeat, rounds)
    for runtime in timed.values():
        for row in runtime.values():
            row["speedup_over_mac_reduction"] = round(row["speedup"] / factor, 3)
    ratio = {r: timed[r]["batch64"]["speedup_over_mac_reduction"] if r in timed else None for r in RUNTIMES}
    widths = sorted({(b, a) for b, a in estimate(struct, plan.ratios, plan.round_to).channels.values()})
    row = {"plan": {"preset": preset, **arguments, "round_to": plan.round_to, "conv_widths": widths},
           "macs_before": macs0, "macs_after": macs1, "mac_reduction_factor": round(factor, 3), **timed["eager"],
           "onnxruntime": {**timed["onnxruntime"], "session": records["pruned"]} if "onnxruntime" in timed else
           {"error": records["original"]["error"] or records["pruned"]["error"]},
           "speedup_over_mac_reduction": ratio,
           "meets_target_in": [r for r, v in ratio.items() if v is not None and v >= TARGET]}
    row["meets_target"] = bool(row["meets_target_in"])
    if row_name == "resnet56":  # always: a target met under load can be noise, the table says where the time goes
        row["why"] = why_table(models["original"].cpu(), models["pruned"].cpu(), size, repeat)
    return row


def run(repeat: int, rounds: int, device: torch.device | None = None, names=tuple(ROWS)) -> dict:
    device = device or best_device()
    load_before, rows = os.getloadavg(), {}
    for name in names:
        rows[name] = row = _measure(name, device, repeat, rounds)
        for runtime in RUNTIMES:
            timed = row if runtime == "eager" else row["onnxruntime"]
            if "batch64" in timed:
                print(f"{name} {runtime}: {row['mac_reduction_factor']}x fewer MACs; batch 64 speedup "
                      f"{timed['batch64']['speedup']}x ({timed['batch64']['speedup_over_mac_reduction']} of the MAC "
                      f"reduction; target >= {TARGET}); batch 1 {timed['batch1']['speedup']}x")
    return {"benchmark": "latency_speedup", "device": str(device), "onnxruntime_device": "cpu",
            "onnxruntime_session": {**SESSION, "intra_op_threads": torch.get_num_threads()},
            "target_speedup_over_mac_reduction": TARGET, "repeat": repeat, "rounds": rounds,
            "allocator": steady_allocator(),
            "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "vector_block": vector_block()},
            "load_average": load_average(load_before), "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=LATENCY_REPEAT, help="timed forwards per latency measurement")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds (median taken)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="rows to measure (all)")
    parser.add_argument("--out", default=str(RESULTS / "latency_speedup.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    write_result(run(args.repeat, args.rounds, torch.device(args.device) if args.device else None, args.rows),
                 args.out)


if __name__ == "__main__":
    main()
