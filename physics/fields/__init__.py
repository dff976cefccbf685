"""Physical fields and trajectories: Lorenz systems, 2D Kolmogorov flow, their datasets and the
trajectory-prior task."""
