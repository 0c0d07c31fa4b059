"""cotgen distill stage."""
