"""jukebox.cli"""
