"""cotgen generate stage."""
