"""The shared core: configuration, the descent (the one loop), layers and ops, objectives, the training loop,
checkpoints, distributed training, metrics, FLOP counting, progress and reports. It knows nothing of pixels, frames
or tokens."""
