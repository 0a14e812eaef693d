"""jukebox: a modern, fast re-implementation of OpenAI Jukebox."""

__version__ = "0.1.0"
