"""The Gradio app (``ebt-vision demo``): one tab per workload (``*_tab``), each a thin layer over a view (``*_view``)
that computes everything it shows and is tested without a browser."""
