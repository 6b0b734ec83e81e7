"""Training decoders on rendered text (pixels), tokens, or both."""
