"""cotgen train stage."""
