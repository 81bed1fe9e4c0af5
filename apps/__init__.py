"""A launcher of the Gradio app from a checkout (the app is ``ebt_vision.app``)."""
