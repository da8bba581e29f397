"""dynamig: solver."""
