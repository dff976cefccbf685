"""Score-SDE on 2D targets (8 Gaussians, two moons, checkerboard)."""

from .targets import TARGETS, sample_target
from .task import Toy2DConfig, Toy2DTask, angle_condition, angle_error

__all__ = ["TARGETS", "sample_target", "Toy2DConfig", "Toy2DTask", "angle_condition", "angle_error"]
