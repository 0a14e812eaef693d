"""jukebox.sampling"""
