"""Which models prunekit prunes: every classification model of torchvision and a sample of timm, random init,
10 classes, every prunable group at ratio 0.3.

For each model: its structure (prunable groups, frozen convs and why), a pruning of every group at
:data:`RATIO` (:func:`prunekit.pruning.prune.prune_model`, which checks the pruned model against the original with the
same channels zeroed, :mod:`prunekit.pruning.verify`), and the instant estimate (:func:`prunekit.pruning.structure.estimate`)
compared with the pruned model's real params and MACs. The input is the smallest of :data:`SIZES` the model
runs on (64 px where it works). Each model runs in a child process (memory; a time limit).

    python experiments/zoo_table.py                  # -> experiments/out/zoo_table.json and zoo_table.md
    python experiments/zoo_table.py --only resnet18 regnet_x_400mf

tests/test_prune_zoo.py runs :func:`check` on the same models.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn

from prunekit.errors import PrunekitError
from prunekit.models.metrics import count_macs
from prunekit.models.zoo import count_params
from prunekit.pruning.prune import prune_model
from prunekit.pruning.structure import estimate, structure

OUT = Path(__file__).resolve().parent / "out"
RATIO = 0.3
SIZES = (64, 56, 75, 96, 128, 224)  # 56: ViT-H/14's patches; 75: Inception-v3's stem
TIMM = ("resnet18", "resnext26ts", "convnext_atto", "efficientnet_b0", "regnetx_002", "mobilenetv3_small_050",
        "ghostnet_050", "vgg11_bn", "densenet121", "rexnet_100")
LIMIT_S = 1800  # one model's time limit in the child process


def torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def build(source: str, name: str, size: int) -> nn.Module:
    """A random-init classifier with 10 classes, in eval mode, seeded."""
    torch.manual_seed(0)
    if source == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10).eval()
    import torchvision

    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    if name.startswith("vit_"):
        kwargs["image_size"] = size
    return torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs).eval()


def smallest_input(source: str, name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """The model built for, and the smallest input of :data:`SIZES` it runs on."""
    for s in SIZES:
        try:
            model = build(source, name, s)
            with torch.no_grad():
                model(torch.zeros(1, 3, s, s))
            return model, (3, s, s)
        except Exception:  # noqa: BLE001 - too small for this model (or not its patch size): try the next
            continue
    raise RuntimeError(f"{name} runs on none of the input sizes {SIZES}")


def check(model: nn.Module, input_size: tuple[int, int, int]) -> dict:
    """Prune every group of ``model`` at :data:`RATIO` -> {groups, grouped (groups pruned by blocks: grouped convs,
    GroupNorms, chunks), spread (groups with a member carrying channels several times: GhostNet), frozen,
    why_frozen ({reason kind: convs}), result ("prunes exactly", "nothing prunable: ..." or "refused:
    <PrunekitError>"), estimate_exact (None when refused), params / macs before and after}. Any exception other
    than a PrunekitError propagates."""
    try:
        struct = structure(model, input_size)
    except PrunekitError as exc:
        return {"groups": 0, "frozen": 0, "why_frozen": {}, "result": f"refused: {exc}", "estimate_exact": None}
    why = dict(Counter(reason_kind(r) for r in struct.frozen.values()).most_common())
    row = {"groups": len(struct.groups), "grouped": sum(g.blocks > 1 for g in struct.groups),
           "spread": sum(bool(g.spread) for g in struct.groups), "frozen": len(struct.frozen), "why_frozen": why}
    ratios = {g.root: RATIO for g in struct.groups}
    g = torch.Generator().manual_seed(0)
    scores = {n: torch.rand(m.out_channels, generator=g) for n, m in model.named_modules()
              if isinstance(m, nn.Conv2d)}
    try:
        pruned, _ = prune_model(model, ratios, scores, input_size)
    except PrunekitError as exc:
        return {**row, "result": f"refused: {exc}", "estimate_exact": None}
    est = estimate(struct, ratios)
    real = {"params": count_params(pruned), "macs": count_macs(pruned, input_size)}
    exact = est.params == real["params"] and est.macs == real["macs"] and est.params_before == count_params(model) \
        and est.macs_before == count_macs(model, input_size)
    result = "prunes exactly" if struct.groups else f"nothing prunable: {', '.join(why) or 'no conv'}"
    return {**row, "result": result, "estimate_exact": exact, "params_before": est.params_before,
            "params": real["params"], "params_estimate": est.params, "macs_before": est.macs_before,
            "macs": real["macs"], "macs_estimate": est.macs}


def reason_kind(reason: str) -> str:
    """A frozen conv's reason without layer names: what kind of obstacle it is."""
    for pattern, kind in ((r"grouped conv", "grouped conv"), (r"reshape", "reshape / channel shuffle"),
                          (r"concatenated with others", "concatenated into a wider conv"),
                          (r"split|slice|unbind", "split / slice"), (r"model's outputs", "model outputs"),
                          (r"outputs of the linear layer", "linear layer outputs"),
                          (r"\((\w+)\), which prunekit does not prune", None)):
        m = re.search(pattern, reason)
        if m:
            return kind or m.group(1)
    return reason


def one(source: str, name: str) -> dict:
    t0 = time.perf_counter()
    model, size = smallest_input(source, name)
    row = {"model": name, "source": source, "input": size[1], **check(model, size)}
    return {**row, "seconds": round(time.perf_counter() - t0, 1)}


def run_child(source: str, name: str) -> dict:
    """:func:`one` in a child process; a crash or the time limit is recorded as the row's result."""
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, __file__, "--child", source, name], capture_output=True, text=True,
                             timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        return {"model": name, "source": source, "result": f"error: over {LIMIT_S} s", "seconds": LIMIT_S}
    if out.returncode == 0:
        return json.loads(out.stdout.strip().splitlines()[-1])
    last = (out.stderr.strip().splitlines() or ["?"])[-1]
    return {"model": name, "source": source, "result": f"error: {last}", "seconds": round(time.perf_counter() - t0, 1)}


def markdown(rows: list[dict]) -> str:
    head = "| model | source | input | groups | of which grouped / spread | frozen | why frozen | result | estimate exact " \
           "| s |\n|---|---|---|---|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        why = ", ".join(f"{k} {v}" for k, v in (r.get("why_frozen") or {}).items())
        exact = {True: "yes", False: "**no**", None: "-"}[r.get("estimate_exact")]
        result = r["result"].replace("|", "/")
        kinds = f"{r['grouped']} / {r['spread']}" if r.get("grouped") or r.get("spread") else ""
        lines.append(f"| {r['model']} | {r['source']} | {r.get('input', '-')} | {r.get('groups', '-')} | {kinds} | "
                     f"{r.get('frozen', '-')} | {why} | {result} | {exact} | {r['seconds']} |")
    return head + "\n".join(lines) + "\n\n" + totals(rows) + "\n"


def totals(rows: list[dict]) -> str:
    kinds = Counter(r["result"].split(":")[0] for r in rows)
    exact = sum(r.get("estimate_exact") is True for r in rows)
    return (f"{len(rows)} models: {kinds['prunes exactly']} prune exactly, {kinds['nothing prunable']} have no "
            f"prunable group, {kinds['refused']} refused, {kinds['error']} errors; the estimate is exact for {exact}.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="these models only, printed, not written (default: all of "
                        "torchvision and the timm sample, written to experiments/out)")
    parser.add_argument("--child", nargs=2, metavar=("SOURCE", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one(*args.child)))
        return
    todo = [("torchvision", n) for n in torchvision_names()] + [("timm", n) for n in TIMM]
    if args.only:
        todo = [(s, n) for s, n in todo if n in args.only]
    rows = []
    for source, name in todo:
        rows.append(run_child(source, name))
        print(f"{name} ({source}): {json.dumps(rows[-1]) if args.only else rows[-1]['result'][:150]} "
              f"[{rows[-1]['seconds']} s]", flush=True)
    if args.only:
        return
    OUT.mkdir(exist_ok=True)
    (OUT / "zoo_table.json").write_text(json.dumps(rows, indent=1))
    (OUT / "zoo_table.md").write_text(markdown(rows))
    print(totals(rows))


if __name__ == "__main__":
    main()
