"""dynamig: dynamig."""
