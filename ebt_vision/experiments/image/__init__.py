"""Image experiments: the EBT-vs-DiT comparison (``compare``), the original work's protocol (``paper``), held-out
evaluation of one checkpoint (``evaluation``), the training ablation, adaptive per-patch compute, the step schedule's
calibration, linear probing and the training-step benchmark."""
