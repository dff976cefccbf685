"""Backbones and embeddings: modules only (they never import samplers or processes)."""

from .embeddings import SinusoidalEmbedding
from .mlp import MLPDenoiser

__all__ = ["SinusoidalEmbedding", "MLPDenoiser"]
