"""Experiments built on the models: training recipes, held-out evaluation, the EBT-vs-DiT comparison, the ablation,
the benchmark. They import the models; the models never import them."""
