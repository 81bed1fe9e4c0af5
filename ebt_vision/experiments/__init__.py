"""Experiments built on the models, one package per workload (``image``, ``video``, ``text``): comparisons, held-out
evaluations, ablations, probing and benchmarks, and their reports. ``selection`` chooses every report's settings on
validation; ``contenders`` trains the models of a head-to-head comparison. They import the models; the models never
import them."""
