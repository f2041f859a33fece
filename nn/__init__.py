"""gradq.nn."""
