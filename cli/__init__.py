"""gradq.cli."""
