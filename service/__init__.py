"""gradq.service."""
