"""Training: the trainer (``fit``, ``train_new``; DO-Conv, bf16, DistributedDataParallel) and distillation."""
