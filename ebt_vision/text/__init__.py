"""The text workload: the autoregressive text EBT (candidate = next-token logits at every position, one energy per
token), offline corpora and their held-out splits, the tokenizer, token windows, the Transformer++ baseline, System-2
inference (more steps, best-of-N, energy-based stopping, Langevin noise), evaluation and generation."""
