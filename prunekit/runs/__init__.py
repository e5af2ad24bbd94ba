"""Runs: a pruning recorded on disk (manifest, report, exports), fine-tuning it, background jobs, sweeps, latency
runtimes and the comparison of runs."""
