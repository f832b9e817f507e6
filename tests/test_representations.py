"""The image representations of Barron's VAE experiment (core/representations.py): every map is linear with
|det J| = 1 on every size the lab trains on (8, 28 and 32 pixels), inverts exactly, is orthonormal where it
should be (the DCT) and not where it should not (the biorthogonal wavelet, sYUV), and is the construction it
claims (scipy's DCT, Barron's filters, whole-sample reflection, the synthesis filters as the inverse)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from core.representations import (
    CDF97_HIGHPASS_HALF,
    CDF97_LOWPASS_HALF,
    COLOURS,
    REPRESENTATIONS,
    SYUV_SCALE,
    WAVELET_ZETA,
    Representation,
    barron_levels,
    cdf97_filters,
    dct_matrix,
    layout,
    make_representation,
    reflect_index,
    rgb_to_syuv_matrix,
    wavelet_levels,
    wavelet_log_abs_det,
    wavelet_matrix,
)

# The image sides the lab trains on (digits 8, the MNISTs 28, CIFAR-10 and the photo patches 32), grey and in
# colour. A colour map is the colour matrix per pixel followed by the spatial map per channel, so
# det = det(K)^(H·W)·det(S)^C: the 3-channel cases at 8 pixels check that composition whole (a 192×192
# Jacobian), the 32-pixel colour ones too but only in the slow run (3,072×3,072).
SHAPES = [(1, 8, 8), (1, 28, 28), (1, 32, 32), (3, 8, 8)]
MAPS = [(shape, spatial, colour) for shape in SHAPES for spatial in REPRESENTATIONS for colour in COLOURS
        if colour == "rgb" or shape[0] == 3]
MAPS += [pytest.param((3, 32, 32), spatial, colour, marks=pytest.mark.slow) for spatial in REPRESENTATIONS
         for colour in COLOURS]


def jacobian(t: Representation, shape: tuple[int, int, int]) -> torch.Tensor:
    """The map's matrix (float64): its columns are the images of the basis vectors."""
    n = math.prod(shape)
    return t(torch.eye(n, dtype=torch.float64).reshape(n, *shape)).reshape(n, n).T


@pytest.mark.parametrize(("shape", "spatial", "colour"), MAPS, ids=lambda v: "x".join(map(str, v))
                         if isinstance(v, tuple) else v)
def test_every_map_is_volume_preserving_and_inverts_exactly(shape, spatial, colour):
    t = Representation(shape, spatial, colour)
    sign, logdet = torch.linalg.slogdet(jacobian(t, shape))
    assert abs(math.exp(float(logdet)) - 1) < 1e-5 and t.log_abs_det == 0.0
    assert float(sign) != 0
    x = torch.rand(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(t.inverse(t(x)), x, atol=1e-12, rtol=0)
    x32 = x.float()
    y32 = t(x32)
    assert y32.dtype == torch.float32 and y32.shape == x32.shape
    assert (t.inverse(y32) - x32).abs().max() < 2e-6  # float32 matrices: exact to its rounding
    assert t.state_dict() == {}  # nothing is added to a model's weights


def test_the_dct_is_scipys_orthonormal_dct_and_is_orthonormal():
    for n in (8, 28, 32):
        d = dct_matrix(n)
        assert np.abs(d @ d.T - np.eye(n)).max() < 1e-13
        assert np.allclose(d, scipy.fft.dct(np.eye(n), norm="ortho", axis=0), atol=1e-13)
    x = torch.rand(2, 3, 28, 32, dtype=torch.float64)  # a non-square image: rows and columns kept apart
    y = Representation((3, 28, 32), "dct")(x)
    assert np.allclose(y.numpy(), scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho"), atol=1e-12)
    j = jacobian(Representation((1, 8, 8), "dct"), (1, 8, 8))
    assert torch.allclose(j @ j.T, torch.eye(64, dtype=torch.float64), atol=1e-12)
    assert float(y[0, 0, 0, 0]) == pytest.approx(float(x[0, 0].sum()) / math.sqrt(28 * 32))  # DC at top left


def test_barrons_scaled_yuv_has_determinant_one_and_is_not_orthonormal():
    k = rgb_to_syuv_matrix()
    assert abs(SYUV_SCALE - 1.580227820074) < 1e-9
    assert np.linalg.det(k) == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(k[0] / SYUV_SCALE, [0.299, 0.587, 0.114])  # Y is the luma
    assert np.abs(k @ k.T - np.eye(3)).max() > 0.1
    grey = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64)  # a grey pixel has no chroma
    y = Representation((3, 4, 4), "pixels", "yuv")(grey)
    assert torch.allclose(y[:, 1:], torch.zeros_like(y[:, 1:]), atol=1e-8)
    assert torch.allclose(y[:, 0], torch.full_like(y[:, 0], 0.5 * SYUV_SCALE))


def test_the_cdf97_filters_are_barrons_and_biorthogonal_not_orthonormal():
    lo, hi = cdf97_filters()
    assert len(lo) == 9 and len(hi) == 7 and lo[0] == CDF97_LOWPASS_HALF[0] and hi[-3] == CDF97_HIGHPASS_HALF[3]
    assert sum(lo.values()) == pytest.approx(math.sqrt(2), abs=1e-11)
    assert sum(hi.values()) == pytest.approx(0.0, abs=1e-11)
    assert math.sqrt(sum(v * v for v in lo.values())) == pytest.approx(1.020, abs=1e-3)
    assert math.sqrt(sum(v * v for v in hi.values())) == pytest.approx(0.991, abs=1e-3)
    a = wavelet_matrix(16)
    assert np.abs(a @ a.T - np.eye(16)).max() > 0.05  # not orthonormal...
    s = np.linalg.inv(a)  # ...and its inverse is the synthesis: the alternating-sign swaps of the analysis
    low_column, high_column = s[:, 4], s[:, 8 + 4]  # the 5th low (centred on sample 8), 5th high (on 9)
    assert np.allclose(low_column[8 - 3:8 + 4], [(-1) ** t * hi[t] for t in range(-3, 4)], atol=1e-10)
    assert np.allclose(high_column[9 - 4:9 + 5], [(-1) ** t * lo[t] for t in range(-4, 5)], atol=1e-10)
    assert np.abs(low_column[:5]).max() < 1e-12 and np.abs(high_column[:5]).max() < 1e-12


def test_the_boundary_is_whole_sample_reflection_repeated_without_bound():
    assert [reflect_index(i, 4) for i in range(-3, 7)] == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]  # … D C B A B C D C B A
    assert [reflect_index(i, 2) for i in range(-4, 5)] == [0, 1, 0, 1, 0, 1, 0, 1, 0]  # 9 taps on 2 samples
    # A constant signal stays constant under reflection: the highs vanish even at the edges, the lows are √2·x.
    for n in (2, 3, 4, 7, 8):
        y = wavelet_matrix(n) @ np.ones(n)
        lows = (n + 1) // 2
        assert np.allclose(y[:lows], math.sqrt(2)) and np.allclose(y[lows:], 0, atol=1e-11)


def test_levels_and_what_odd_sides_would_cost():
    assert [wavelet_levels(s, s) for s in (8, 28, 32, 64)] == [3, 2, 5, 6]
    assert [barron_levels(s, s) for s in (8, 28, 32, 64)] == [3, 5, 5, 6]  # the same for powers of two
    for n in range(2, 33):  # one level: det 1 for even lengths, ζ (one low more than highs) for odd ones
        assert abs(np.linalg.det(wavelet_matrix(n))) == pytest.approx(1.0 if n % 2 == 0 else WAVELET_ZETA, rel=1e-10)
    # 28×28 at Barron's 5 levels splits a 7×7 block: still exact and invertible, and log|det| is what we say.
    t = Representation((1, 28, 28), "wavelet", levels=5)
    logdet = float(torch.linalg.slogdet(jacobian(t, (1, 28, 28)))[1])
    assert t.log_abs_det == pytest.approx(logdet, abs=1e-8) == pytest.approx(14 * math.log(WAVELET_ZETA))
    assert wavelet_log_abs_det(28, 28, 2) == 0.0
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    assert torch.allclose(t.inverse(t(x)), x, atol=1e-12)
    with pytest.raises(ValueError, match="too many"):
        Representation((1, 8, 8), "wavelet", levels=4)


def test_a_constant_image_puts_everything_in_the_lowpass_residual():
    for shape, residual in (((1, 8, 8), 8.0), ((1, 32, 32), 32.0), ((1, 28, 28), 4.0)):
        t = Representation(shape, "wavelet")
        y = t(torch.ones(1, *shape, dtype=torch.float64))[0, 0]
        side = shape[1] >> t.levels
        assert torch.allclose(y[:side, :side], torch.full((side, side), residual, dtype=torch.float64))
        y[:side, :side] = 0
        assert y.abs().max() < 1e-10


def test_the_layout_tiles_the_coefficients():
    for h, w in ((8, 8), (28, 28), (32, 32), (16, 8)):
        cover = np.zeros((h, w), dtype=int)
        for region in layout("wavelet", h, w):
            cover[region.top:region.top + region.height, region.left:region.left + region.width] += 1
        assert (cover == 1).all()
    names = [r.name for r in layout("wavelet", 32, 32)]
    assert names[0] == "level 1 horizontal detail" and names[-1] == "lowpass residual (1×1)"
    assert layout("wavelet", 28, 28)[-1].name == "lowpass residual (7×7)"
    assert layout("dct", 8, 8)[0].name == "DC"


def test_the_maps_run_under_autocast_in_float32_and_grey_images_ignore_the_colour():
    t = make_representation((3, 32, 32), "wavelet", "yuv")
    x = torch.rand(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = t(x)
    assert y.dtype == torch.float32 and torch.allclose(y, t(x))
    assert make_representation((1, 28, 28), "dct", "yuv").colour == "rgb"  # colour does not apply to grey
    with pytest.raises(ValueError, match="3-channel"):
        Representation((1, 28, 28), "dct", "yuv")
    assert Representation((1, 8, 8)).is_identity and Representation((1, 8, 8))(x[:, :1, :8, :8]) is not None
    assert t.title == "CDF 9/7 wavelet + YUV" and make_representation((1, 8, 8), "dct").title == "DCT"
