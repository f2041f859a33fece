"""gradq.migrations."""
