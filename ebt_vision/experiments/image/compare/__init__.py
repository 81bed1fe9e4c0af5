"""Head-to-head denoising: the image EBT (blind, and conditioned on sigma) against the diffusers DiT.

``contenders``: what is trained (same crop stream; a step-matched and a compute-matched DiT); ``costs``: FLOPs per
pass and per training step; ``protocols``: the Gaussian and the original diffusion-level evaluations on a split of
held-out photos; ``report``: averaging, choosing each method's settings on the validation split
(``experiments.selection``), tables, goal verdicts, plot and the Markdown/JSON report; ``run``: the whole comparison.
"""
