"""jukebox.data"""
