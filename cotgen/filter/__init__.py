"""cotgen filter stage."""
