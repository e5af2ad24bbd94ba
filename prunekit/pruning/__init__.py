"""Pruning: a model's prunable structure and the instant estimate, the ratio rule, which filters a ratio removes,
plans and presets, physical removal through Torch-Pruning with its self-check, and the judgement of a candidate
plan (BatchNorm recalibration, predicted accuracy, sensitivity curves)."""
