"""gradq.migrations.versions."""
