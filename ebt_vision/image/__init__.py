"""The image workload: the bidirectional image EBT, tiling, noise, photo data and image files, the denoising
objective, its training recipe, inference and the step schedule, the diffusers DiT and plain-transformer baselines,
CBM3D."""
