"""Backbones and embeddings: modules only (they never import samplers or processes)."""

from .egnn import EGNN, EGNNDenoiser, from_dense, to_dense
from .embeddings import ConditionEmbedding, SinusoidalEmbedding
from .mlp import MLPDenoiser
from .autoencoder import FieldAutoencoder, radial_power_spectrum, reconstruction_loss
from .transformer import SpaceTimeTransformer
from .unet import UNet

__all__ = ["SinusoidalEmbedding", "ConditionEmbedding", "MLPDenoiser", "EGNN", "EGNNDenoiser", "to_dense", "from_dense", "UNet",
           "SpaceTimeTransformer", "FieldAutoencoder", "radial_power_spectrum", "reconstruction_loss"]
