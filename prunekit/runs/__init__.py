"""Runs: a pruning recorded on disk (manifest, report, exports), fine-tuning it, background jobs, sweeps, latency
runtimes and the comparison of runs."""
# the runtimes register themselves on import, in this order
from prunekit.runs import runtime_eager, runtime_onnx  # noqa: F401
