"""ebt-vision: Energy-Based Transformers for vision. Submodules import torch; this package root stays light."""

__version__ = "0.1.0"
