"""dynamig: deviceplugin."""
