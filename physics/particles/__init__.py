"""Particle systems (DW4, LJ13, LJ55): energies, MCMC reference data, metrics and the generative task."""
