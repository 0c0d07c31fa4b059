"""cotgen: teach small Gemma 3 models to show their work."""

__version__ = "0.1.0"
