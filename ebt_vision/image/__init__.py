"""The image workload: the bidirectional image EBT, tiling, noise, photo data, the denoising objective, inference,
the diffusers DiT and plain-transformer baselines, CBM3D, and the visualisation the app shows."""
