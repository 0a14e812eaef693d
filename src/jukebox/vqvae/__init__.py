"""Hierarchical VQ-VAE (Jukebox): per-level encoders, EMA codebooks and decoders, losses, OpenAI import."""

from .model import VQVAE

__all__ = ["VQVAE"]
