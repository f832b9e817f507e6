"""The per-coefficient likelihoods of Barron's VAE experiment (core/losses/likelihoods.py): each is a normalised
density (integrates to 1 in 1-D), matches the textbook density, starts at Barron's values (c = 0.01, α = 1,
ν = 1), keeps c above its floor and α in [0, 3], and learns what the data say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from core.losses import AdaptiveLoss
from core.losses.likelihoods import (
    LIKELIHOODS,
    SCALE_INIT,
    SCALE_LO,
    CauchyLikelihood,
    GeneralLikelihood,
    NormalLikelihood,
    StudentsTLikelihood,
    make_likelihood,
)


def _with(module, **latents: list[float]):
    with torch.no_grad():
        for name, values in latents.items():
            getattr(module, name).copy_(torch.tensor(values, dtype=torch.float32))
    return module


CASES = [
    _with(NormalLikelihood(3), scale_latent=[0.0, 2.0, -3.0]),
    _with(CauchyLikelihood(3), scale_latent=[0.0, 2.0, -3.0]),
    _with(StudentsTLikelihood(3), scale_latent=[0.0, 1.0, -2.0], log_df_latent=[-0.5, 0.0, 3.0]),
    _with(GeneralLikelihood(3), scale_latent=[0.0, 1.0, -2.0], alpha_latent=[-6.0, 0.0, 4.0]),
]


@pytest.mark.parametrize("module", CASES, ids=lambda m: m.name)
def test_every_likelihood_integrates_to_one(module):
    """∫ p(r) dr over the real line, per coefficient: with r = c·sinh(v) the integrand decays exponentially
    in v even for the heaviest tails here (ν = 0.61: p ~ r^(−1.61)), so the trapezoidal rule on v ∈ [−60, 60]
    converges geometrically; one forward pass evaluates all nodes."""
    v = torch.arange(-60.0, 60.0 + 1e-9, 0.01, dtype=torch.float64)
    with torch.no_grad():
        c = module.scale().double()
        r = c * torch.sinh(v)[:, None]
        integrand = torch.exp(-module(r).double()) * c * torch.cosh(v)[:, None]
    total = torch.trapezoid(integrand, v, dim=0)
    assert torch.allclose(total, torch.ones(3, dtype=torch.float64), atol=1e-5), total
    assert float(integrand[0].max()) < 1e-9 and float(integrand[-1].max()) < 1e-9  # the tails are in


def test_the_densities_are_the_textbook_ones():
    r = torch.linspace(-0.2, 0.2, 41, dtype=torch.float64)[:, None].repeat(1, 3)
    normal, cauchy, t, _ = CASES
    with torch.no_grad():
        c = normal.scale().double()
        assert np.allclose(normal(r).numpy(), -scipy.stats.norm.logpdf(r.numpy(), scale=c.numpy()), atol=2e-5)
        c = cauchy.scale().double()
        want = -scipy.stats.cauchy.logpdf(r.numpy(), scale=math.sqrt(2) * c.numpy())  # α = 0: scale √2·c
        assert np.allclose(cauchy(r).numpy(), want, atol=2e-5)
        nu, s = t.nu().double(), t.scale().double()
        want = -scipy.stats.t.logpdf(r.numpy(), df=nu.numpy(), scale=s.numpy())
        assert np.allclose(t(r).numpy(), want, atol=2e-4, rtol=1e-5)
        # The general distribution at α = 2 is the normal, at α = 0 the Cauchy of scale √2·c.
        g = GeneralLikelihood(3, alpha_lo=0.0, alpha_hi=3.0)
        _with(g, alpha_latent=[30.0, -30.0, 0.0])
        alpha = g.alpha()
        assert alpha[0] == pytest.approx(3.0) and alpha[1] == pytest.approx(0.0, abs=1e-9)
        edge = GeneralLikelihood(1, alpha_lo=1.999999, alpha_hi=2.000001, alpha_init=2.0)
        assert np.allclose(edge(r[:, :1]).numpy(), NormalLikelihood(1)(r[:, :1]).numpy(), atol=1e-4)
        zero = GeneralLikelihood(1, alpha_lo=0.0, alpha_hi=1e-6, alpha_init=5e-7)
        assert np.allclose(zero(r[:, :1]).numpy(), CauchyLikelihood(1)(r[:, :1]).numpy(), atol=1e-4)


def test_they_start_where_barrons_did_and_stay_in_their_bounds():
    for name in LIKELIHOODS:
        m = make_likelihood(name, 5, rate=7.0)  # the rate changes the speed, never the start
        with torch.no_grad():
            assert torch.allclose(m.scale(), torch.full((5,), SCALE_INIT), rtol=1e-6)
            maps = m.maps()
        assert set(maps) == set(LIKELIHOODS[name].learns)
        assert sum(p.numel() for p in m.parameters()) == 5 * len(LIKELIHOODS[name].learns)
    with torch.no_grad():
        assert torch.allclose(GeneralLikelihood(2).alpha(), torch.ones(2))  # Barron's alpha_init 1
        assert torch.allclose(StudentsTLikelihood(2).nu(), torch.ones(2))  # log ν = 0: a Cauchy
        floor = _with(NormalLikelihood(1), scale_latent=[-1e4]).scale()
        assert float(floor) == float(torch.tensor(SCALE_LO))  # the floor, in float32
        top = _with(GeneralLikelihood(2), alpha_latent=[1e4, -1e4]).alpha()
        assert float(top[0]) == pytest.approx(3.0) and float(top[1]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown distribution"):
        make_likelihood("laplace", 3)
    with pytest.raises(ValueError, match="last dimension"):
        NormalLikelihood(3)(torch.zeros(2, 4))


def test_barrons_scale_parameterisation_against_the_adaptive_losss():
    """The claim in the module docstring: from c = 0.01, reaching c = 0.1 takes 9.5 units of the latent in
    Barron's parameterisation and 2.35 in AdaptiveLoss's."""
    ours = NormalLikelihood(1)
    theirs = AdaptiveLoss(1, scale_init=SCALE_INIT, scale_lo=SCALE_LO)
    with torch.no_grad():
        start = float(theirs.scale_latent)
        ours.scale_latent += 9.46
        theirs.scale_latent += 2.35
        assert float(ours.scale()) == pytest.approx(0.1, rel=0.01)
        assert float(theirs.scale()) == pytest.approx(0.1, rel=0.01)
        theirs.scale_latent.fill_(start)
        assert float(theirs.scale()) == pytest.approx(float(NormalLikelihood(1).scale()), rel=1e-6)


def test_they_learn_the_scale_and_the_shape_of_their_data():
    """Adam on the summed NLL: the normal finds σ, the general distribution's α falls on Cauchy data."""
    torch.manual_seed(0)
    data = 0.05 * torch.randn(256, 2)
    normal = NormalLikelihood(2, rate=30.0)
    heavy = torch.distributions.Cauchy(0.0, 0.02).sample((256, 2))
    general = GeneralLikelihood(2, rate=30.0)
    for model, x, steps in ((normal, data, 300), (general, heavy, 50)):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    with torch.no_grad():
        assert torch.allclose(normal.scale(), data.square().mean(0).sqrt(), rtol=0.02)  # the MLE of σ
        assert float(general.alpha().max()) < 0.5  # from 1 towards the Cauchy's α = 0
