"""Benchmark: measured latency speedup of pruned models against their MAC reduction.

VGG-16-BN at the published SFM budget (-66.7% FLOPs) and ResNet-56 at about 2x fewer MACs (uniform ratios
solved for -50% FLOPs), filters chosen by L1, pruned with Torch-Pruning. Latency is the median of repeated
eval-mode forwards at batch 1 and 64, original and pruned timed round-robin in one run. Target (issue 4):
at batch 64 on the CPU, speedup >= 0.8 x the MAC reduction factor.

    python benchmarks/latency_speedup.py [--repeat 10] [--threads 0] [--device cuda|cpu]
"""
from __future__ import annotations

import argparse
import statistics

import torch
from common import RESULTS, write_result

from prunekit.criteria import get_criterion
from prunekit.metrics import best_device, count_macs, latency_ms
from prunekit.models import build_model, model_info
from prunekit.presets import get_preset
from prunekit.prune import prune_model
from prunekit.structure import estimate, structure

TARGET = 0.8


def _plan(name: str, struct):
    if name == "vgg16_bn":
        return get_preset("vgg16_published").make(struct, "vgg16_bn").ratios
    return get_preset("uniform").make(struct, name, target=0.5, by="flops").ratios


def run(repeat: int, rounds: int, device: torch.device | None = None) -> dict:
    device = device or best_device()
    rows = {}
    for name in ("vgg16_bn", "resnet56"):
        model = build_model(name).eval()
        size = model_info(name).input_size
        struct = structure(model, size)
        ratios = _plan(name, struct)
        scores = get_criterion("l1").score(model)
        pruned, _ = prune_model(model, ratios, scores, size)
        model, pruned = model.to(device), pruned.to(device)
        macs0, macs1 = count_macs(model, size), count_macs(pruned, size)
        assert macs1 == estimate(struct, ratios).macs
        row = {"macs_before": macs0, "macs_after": macs1, "mac_reduction_factor": round(macs0 / macs1, 3)}
        for batch in (1, 64):
            times = {"original": [], "pruned": []}
            for _ in range(rounds):  # round-robin, so a change of load hits both alike
                times["original"].append(latency_ms(model, size, batch, repeat=repeat))
                times["pruned"].append(latency_ms(pruned, size, batch, repeat=repeat))
            t0, t1 = statistics.median(times["original"]), statistics.median(times["pruned"])
            row[f"batch{batch}"] = {"original_ms": round(t0, 3), "pruned_ms": round(t1, 3),
                                    "speedup": round(t0 / t1, 3),
                                    "speedup_over_mac_reduction": round(t0 / t1 / (macs0 / macs1), 3)}
        row["meets_target"] = row["batch64"]["speedup_over_mac_reduction"] >= TARGET
        rows[name] = row
        print(f"{name}: {row['mac_reduction_factor']}x fewer MACs; batch 64 speedup {row['batch64']['speedup']}x "
              f"({row['batch64']['speedup_over_mac_reduction']} of the MAC reduction; target >= {TARGET}); "
              f"batch 1 speedup {row['batch1']['speedup']}x")
    return {"benchmark": "latency_speedup", "device": str(device), "target_speedup_over_mac_reduction": TARGET,
            "repeat": repeat, "rounds": rounds, "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed forwards per latency measurement")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds (median taken)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--out", default=str(RESULTS / "latency_speedup.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    write_result(run(args.repeat, args.rounds, torch.device(args.device) if args.device else None), args.out)


if __name__ == "__main__":
    main()
