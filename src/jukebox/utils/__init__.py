"""Small utilities (the original's module names, kept for the founding example)."""
