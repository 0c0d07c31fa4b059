"""cotgen eval stage."""
