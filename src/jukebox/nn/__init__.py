"""jukebox.nn"""
