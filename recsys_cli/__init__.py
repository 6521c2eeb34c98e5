"""recsys: config-driven experiments for next-item recommendation with multi-scale time windows."""

__version__ = "0.1.0"
