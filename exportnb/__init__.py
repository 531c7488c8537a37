"""exportnb: a Jupyter-based kit for investigating failed data exports."""

__version__ = "0.1.0"
