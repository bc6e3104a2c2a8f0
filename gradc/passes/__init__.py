"""Graph passes: the reverse-mode pass and the optimization pipeline."""
