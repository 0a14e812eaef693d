"""jukebox.prior"""
