"""gradq.workers."""
