"""The video workload: next-frame prediction with a causal video EBT, Moving MNIST, real clips and the baselines."""
