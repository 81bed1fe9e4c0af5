"""The text experiment: the text EBT against a same-size Transformer++ on the same tokens (``run``, ``report``)."""
