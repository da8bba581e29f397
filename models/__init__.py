"""dynamig: models."""
