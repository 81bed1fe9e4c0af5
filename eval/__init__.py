"""Thin scripts over the experiments: ``python -m eval.denoise_eval``, ``eval.compare_denoising``, ``eval.bench``,
``eval.probe``, ``eval.video``, ``eval.text`` (each the same as the ``ebt-vision`` command of that name)."""
