"""Offline tools: work on recorded videos and photos rather than a live camera."""
