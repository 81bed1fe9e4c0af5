"""Thin scripts over the library: ``python -m eval.denoise_eval``, ``python -m eval.bench``."""
