"""jukebox.eval"""
