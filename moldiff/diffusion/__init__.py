"""The shared diffusion core: processes, state spaces, denoiser, losses, samplers, likelihood.

Pure math on states: no I/O, no MLflow, no RDKit.
"""

from .categorical import CATEGORICAL_PRIORS, CategoricalPath
from .alignment import align, align_source_per_graph, equivariant_cost_matrix, kabsch
from .couplings import COUPLING_KINDS, Coupler, CouplingStats, CouplingWarning, ot_plan
from .conditioning import ClassifierFreeGuidance, drop_condition, missing_condition
from .denoiser import PREDICTION_KINDS, Denoiser
from .guidance import GaussianObservation, MMPSDenoiser, PosteriorDenoiser, sample_dps
from .inpainting import inpainting_observation, sample_repaint
from .likelihood import LikelihoodResult, log_likelihood, sample_with_log_likelihood
from .mixed import TIME_GRIDS, MixedKnown, MixedPrediction, MixedState, flow_time_grid, sample_mixed_flow
from .losses import TIME_DISTRIBUTIONS, WEIGHTINGS, denoising_loss, flow_matching_loss, sample_time
from .ode import ODESolution, integrate_ode
from .preconditioning import EDMPreconditioning, PrecondCoefficients
from .processes import (
    VESDE,
    VPSDE,
    DiscreteVP,
    FlowPath,
    Process,
    SPACINGS,
    SubVPSDE,
    build_process,
    ddpm_alphas_cumprod,
    time_grid,
)
from .registry import SAMPLERS, SamplerSpec, check_sampler_options, get_sampler, run_sampler, sampler_names
from .samplers import (
    ancestral_update,
    langevin_correct,
    sample_ancestral,
    sample_ddim,
    sample_euler_maruyama,
    sample_heun_churn,
    sample_ode,
    sample_pc,
)
from .spaces import EuclideanSpace, PointCloudSpace, Space, center_of_mass, remove_com

__all__ = [name for name in dir() if not name.startswith("_")]
