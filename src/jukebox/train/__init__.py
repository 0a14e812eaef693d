"""jukebox.train"""
