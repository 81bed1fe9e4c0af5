"""Next-frame prediction, head to head: the video EBT against copy-last-frame, a plain causal transformer and a
diffusers DiT, on Moving MNIST or real footage.

``contenders``: training every model on one clip stream (and a compute-matched DiT); ``costs``: FLOPs per training
step and per predicted frame; ``evaluation``: rollouts of every method and setting on a held-out split, scored per
horizon step; ``report``: choosing settings on validation, tables, plot, GIF strips and the Markdown/JSON report;
``run``: the whole comparison, what the command line calls; ``change``: whether a model's predicted change from the
last frame points where things really move (the cosine, and damping chosen on validation).
"""
