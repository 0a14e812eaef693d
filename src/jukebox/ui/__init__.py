"""jukebox.ui"""
