"""What the physics plugin ships: its configs (``physics/configs``) and its trained models, registered through the
``moldiff.configs`` and ``moldiff.pretrained`` entry points (``pyproject.toml``)."""

from pathlib import Path

from moldiff.pretrained import ShippedModel

HERE = Path(__file__).resolve().parent

#: the folder of the physics configs (toy 2D, particles, fields and assimilation; ``moldiff config list``)
CONFIGS = HERE / "configs"

LORENZ63 = ShippedModel(HERE / "weights" / "lorenz63_prior.pt",
                        "Lorenz-63 trajectory prior for assimilation: local score over 9 states of 0.05 MTU (MLP 256 x 4); "
                        "SDA with the dynamics as a weak constraint (configs/lorenz63_sda.yaml)")
LORENZ96 = ShippedModel(HERE / "weights" / "lorenz96_prior.pt",
                        "Lorenz-96 (40 variables, F = 8) trajectory prior for assimilation: local score over 5 states of "
                        "0.05 MTU (MLP 256 x 4); SDA with the dynamics as a weak constraint (configs/lorenz96_sda.yaml)")
KOLMOGOROV = ShippedModel(HERE / "weights" / "kolmogorov_prior.pt",
                          "Kolmogorov flow (64 x 64 vorticity, Re 1000) latent trajectory prior: a factorised space-time "
                          "transformer over windows of 5 latent states (16 x 8 x 8) of a field autoencoder it carries; SDA "
                          "through the decoder from coarse observations (configs/kolmogorov_latent.yaml)")
