"""labeling stage."""
