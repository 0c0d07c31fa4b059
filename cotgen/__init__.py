"""cotgen: teach small Gemma 3 models to show their work."""

__version__ = "0.1.0"

# The most verifier worker processes (`cotgen.verify.sandbox`); the typed configs bound `workers` by it too.
# It lives here, at the bottom of the import layers, so that verify need not import cotgen.config.
MAX_WORKERS = 256
