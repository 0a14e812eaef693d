"""Small utilities under the original Jukebox's module names (its API names keep working)."""
