"""dynamig: extender."""
