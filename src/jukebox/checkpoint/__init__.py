"""jukebox.checkpoint"""
