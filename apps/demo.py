"""Starts the Gradio app from a checkout: ``python -m apps.demo`` (the same as ``ebt-vision demo``; the app itself is
``ebt_vision.app``)."""

from ebt_vision.app.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
