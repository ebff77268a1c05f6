"""The encoder model: transformer towers and the dual encoder."""
