"""Applications built on the ebt_vision library (the Gradio demo)."""
