"""jukebox.vqvae"""
