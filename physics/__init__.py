"""moldiff.physics: physical systems (2D toys, particles, fields) on the shared moldiff core."""
