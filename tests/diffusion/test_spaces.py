"""State spaces: zero-CoM noise, projection, degrees of freedom and the prior on the subspace."""

import math

import torch

from moldiff.diffusion import VPSDE, VESDE, EuclideanSpace, PointCloudSpace, remove_com


def _helmert(n: int) -> torch.Tensor:
    """Orthonormal basis ``[n - 1, n]`` of the zero-sum subspace of R^n."""
    H = torch.zeros(n - 1, n, dtype=torch.float64)
    for k in range(1, n):
        H[k - 1, :k] = 1.0
        H[k - 1, k] = -k
        H[k - 1] /= math.sqrt(k * (k + 1))
    return H


def _space():
    sizes = torch.tensor([2, 5, 9])
    batch = torch.repeat_interleave(torch.arange(3), sizes)
    return PointCloudSpace(batch, 3, pos_dims=3), sizes


def test_zero_com_noise_and_projection():
    space, _ = _space()
    g = torch.Generator().manual_seed(0)
    z = space.randn_like(torch.zeros(16, 7, dtype=torch.float64), g)
    assert space.com(z).abs().max() < 1e-12
    x = torch.randn(16, 7, dtype=torch.float64, generator=g) + 5
    px = space.project(x)
    assert space.com(px).abs().max() < 1e-12
    torch.testing.assert_close(space.project(px), px)  # idempotent
    torch.testing.assert_close(px[:, 3:], x[:, 3:])  # features untouched
    # float32 too
    z32 = space.randn_like(torch.zeros(16, 7), g)
    assert space.com(z32).abs().max() < 1e-6


def test_zero_com_noise_is_standard_normal_on_the_subspace():
    """Coordinates in an orthonormal basis of the subspace are i.i.d. N(0, 1)."""
    space = PointCloudSpace(torch.zeros(6, dtype=torch.long), 1, pos_dims=3)
    g = torch.Generator().manual_seed(0)
    z = torch.stack([space.randn_like(torch.zeros(6, 3, dtype=torch.float64), g) for _ in range(4000)])
    coords = torch.einsum("kn,snd->skd", _helmert(6), z).reshape(4000, -1)
    cov = coords.T @ coords / 4000
    torch.testing.assert_close(cov, torch.eye(15, dtype=torch.float64), atol=0.08, rtol=0)


def test_prior_logp_counts_subspace_dof():
    space, sizes = _space()
    for proc in (VPSDE(), VESDE(sigma_max=3.0)):
        x = proc.prior_sample(torch.zeros(16, 5, dtype=torch.float64), space, torch.Generator().manual_seed(1))
        lp = proc.prior_logp(x, space)
        s = proc.prior_std
        for gi, n in enumerate(sizes.tolist()):
            xi = x[space.batch == gi]
            coords = _helmert(n) @ xi[:, :3]  # (n - 1) x 3 subspace coordinates
            ref = torch.distributions.Normal(0.0, s).log_prob(coords).sum() + torch.distributions.Normal(
                0.0, s).log_prob(xi[:, 3:]).sum()
            torch.testing.assert_close(lp[gi], ref)


def test_sums_and_dof():
    space, sizes = _space()
    v = torch.ones(16, 4)
    assert space.sum(v).tolist() == [8.0, 20.0, 36.0]
    assert space.dof(v).tolist() == [3 * 1 + 2, 3 * 4 + 5, 3 * 8 + 9]
    e = EuclideanSpace()
    assert e.dof(torch.zeros(3, 4, 5)).tolist() == [20.0] * 3
    assert e.expand(torch.arange(3.0), torch.zeros(3, 4, 5)).shape == (3, 1, 1)


def test_remove_com():
    pos = torch.tensor([[0.0, 0, 0], [2.0, 0, 0], [5.0, 5, 5]])
    out = remove_com(pos, torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0]]))


def test_remove_com_dense_with_and_without_padding():
    from moldiff.diffusion.spaces import remove_com_dense

    x = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(remove_com_dense(x).mean(-2), torch.zeros(3, 2, dtype=torch.float64), atol=1e-14)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    out = remove_com_dense(x, mask)
    for g in range(3):
        real = out[g, mask[g]]
        assert torch.allclose(real, x[g, mask[g]] - x[g, mask[g]].mean(0), atol=1e-14)
        assert (out[g, ~mask[g]] == 0).all()
    assert abs(remove_com_dense(x.numpy()).mean(-2)).max() < 1e-14  # numpy arrays too
