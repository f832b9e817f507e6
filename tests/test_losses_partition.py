"""log Z(α) and d log Z/dα against an independent 30-digit integral, on a dense grid.

ORACLE holds (α, log Z(α), d log Z/dα) computed once by mpmath at 30 digits, as Z = 2∫₀^∞ exp(−ρ(x, α, 1)) dx
with ρ by the paper's formula (`_oracle` below: tanh-sinh quadrature, the slope as −E[∂ρ/∂α] with ∂ρ/∂α by
mpmath's numerical differentiation) — nothing from core.losses. A fast test recomputes a few of them
live, a slow one all the values; the grid is (0, 0.3) at a step of 0.005, the rationals n/11 up to 4,
and points around 0, 2 (down to 1e-9 from it) and up to 1e4 and ∞. Beyond 1e4 mpmath is slow, so
larger α are checked against core.losses' own quadrature, itself checked here against the oracle.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from core.losses import log_partition, nll, rho
from core.losses.formulas import ALPHA_GRAD_GAP
from core.losses.partition import LOG_Z_TWO, integrate_log_partition, knot_layout, log_partition_and_slope

INF = math.inf

ORACLE = [
    (0.0, 1.4913034761293729, -0.8597728667823693),
    (1e-12, 1.491303476128513, -0.8597728667752048),
    (1e-09, 1.4913034752696, -0.8597728596178285),
    (1e-07, 1.491303390152122, -0.8597721503291379),
    (1e-05, 1.491294878758903, -0.8597012300568896),
    (0.001, 1.490447256908795, -0.8526938748797269),
    (0.005, 1.4870907436296439, -0.8259688965357965),
    (0.01, 1.4830379347504534, -0.7956840171579791),
    (0.015, 1.4791290763643907, -0.7683003775113101),
    (0.02, 1.4753508754332976, -0.7433534881684543),
    (0.025, 1.4716920837942427, -0.7204836603688562),
    (0.03, 1.468143055165206, -0.6994058363613785),
    (0.035, 1.4646954246749817, -0.6798898302756803),
    (0.04, 1.4613418702410808, -0.6617468500967221),
    (0.045, 1.458075930669542, -0.6448199997174039),
    (0.05, 1.4548918642522977, -0.6289774038117486),
    (0.055, 1.451784537003083, -0.6141071177241499),
    (0.06, 1.4487493330443262, -0.6001132855300113),
    (0.065, 1.445782081850422, -0.5869131913051279),
    (0.07, 1.442878998521556, -0.5744349625250622),
    (0.075, 1.4400366342709459, -0.5626157580158186),
    (0.08, 1.4372518350164438, -0.5514003215748201),
    (0.085, 1.434521706474126, -0.5407398153964788),
    (0.09, 1.4318435845203101, -0.5305908702798557),
    (0.09090909090909091, 1.431362045537055, -0.5287974782548263),
    (0.095, 1.4292150098610321, -0.5209148056905128),
    (0.1, 1.4266337062522767, -0.5116769842748278),
    (0.105, 1.4240975616692306, -0.5028462738020999),
    (0.11, 1.4216046119417638, -0.49439459568024147),
    (0.115, 1.4191530264655523, -0.4862965437919398),
    (0.12, 1.416741095670458, -0.4785290608678043),
    (0.125, 1.414367219984786, -0.47107116225663803),
    (0.13, 1.412029900079448, -0.4639036989866029),
    (0.135, 1.4097277282124685, -0.4570091535893819),
    (0.14, 1.4074593805237126, -0.4503714633945805),
    (0.145, 1.4052236101536362, -0.44397586697564456),
    (0.15, 1.4030192410794544, -0.4378087702022667),
    (0.155, 1.400845162578238, -0.431857628972977),
    (0.16, 1.3987003242397968, -0.4261108461995634),
    (0.165, 1.396583731463305, -0.42055768101811936),
    (0.17, 1.3944944413808977, -0.41518816852976964),
    (0.17500000000000002, 1.3924315591592675, -0.40999304864281927),
    (0.18, 1.3903942346368496, -0.4049637028091307),
    (0.18181818181818182, 1.3896595667980531, -0.40317436442500454),
    (0.185, 1.3883816592597589, -0.40009209763027365),
    (0.19, 1.386393063284368, -0.39537073446074666),
    (0.195, 1.3844277132184548, -0.39079260426213525),
    (0.2, 1.382484909476304, -0.3863511470680668),
    (0.20500000000000002, 1.380563984226123, -0.38204021550894296),
    (0.21, 1.3786642994106886, -0.3778540419206372),
    (0.215, 1.3767852449243612, -0.37378720862504516),
    (0.22, 1.3749262369315247, -0.36983462102451187),
    (0.225, 1.3730867163131737, -0.36599148319831776),
    (0.23, 1.3712661472298417, -0.3622532757288895),
    (0.23500000000000001, 1.3694640157903257, -0.35861573551927384),
    (0.24, 1.3676798288167857, -0.35507483739256024),
    (0.245, 1.3659131126977835, -0.351626777289084),
    (0.25, 1.3641634123216801, -0.34826795689900036),
    (0.255, 1.362430290083588, -0.3449949695866914),
    (0.26, 1.360713324959737, -0.34180458747987624),
    (0.265, 1.3590121116437208, -0.33869374961060134),
    (0.27, 1.3573262597396234, -0.335659551007781),
    (0.2727272727272727, 1.3564130436925148, -0.33403584373280326),
    (0.275, 1.3556553930074873, -0.3326992326519036),
    (0.28, 1.3539991486570253, -0.3298101722121188),
    (0.28500000000000003, 1.3523571766858384, -0.3269898754943654),
    (0.29, 1.3507291392587513, -0.3242359685366392),
    (0.295, 1.3491147101251735, -0.32154619029406756),
    (0.31, 1.3443499724784396, -0.31384057225765144),
    (0.36363636363636365, 1.3281775328690064, -0.290111153178174),
    (0.45454545454545453, 1.3032527520834487, -0.2599876251202516),
    (0.5, 1.2917070309923648, -0.24833812522191226),
    (0.5454545454545454, 1.280650673069687, -0.2384002675424716),
    (0.6363636363636364, 1.259733957363218, -0.22256841878481945),
    (0.7272727272727273, 1.2400583375907759, -0.2108931815339404),
    (0.75, 1.2352928577760065, -0.2085010315498999),
    (0.8181818181818182, 1.221293448311631, -0.20240760935289465),
    (0.9090909090909091, 1.2031785466838476, -0.196517312616057),
    (1.0, 1.185495232349193, -0.1928700152536552),
    (1.0909090909090908, 1.1680487680533274, -0.19129021353203798),
    (1.1818181818181819, 1.1506534623013644, -0.19175253010653057),
    (1.25, 1.137526706811774, -0.19350983766259974),
    (1.2727272727272727, 1.133119097626351, -0.1943849242124026),
    (1.3636363636363635, 1.1152356322522987, -0.19950506764621173),
    (1.4545454545454546, 1.0967524579848624, -0.2077087483697583),
    (1.5, 1.087188919292851, -0.21327255668550513),
    (1.5454545454545454, 1.077345511192122, -0.2200619820683443),
    (1.6363636363636365, 1.0565574495464793, -0.23853958051426757),
    (1.7272727272727273, 1.0336719804453904, -0.26716594706272634),
    (1.75, 1.0274928776459376, -0.2768083574666769),
    (1.8181818181818181, 1.007394609096597, -0.31573230446701633),
    (1.9, 0.9784664112809625, -0.4029379377487241),
    (1.9090909090909092, 0.974734486703233, -0.4183980764682307),
    (1.99, 0.9299387921347356, -0.862816311667732),
    (1.999, 0.9206003492316073, -1.4139150392509612),
    (1.99999, 0.9189666400296164, -2.560720590065507),
    (1.9999999, 0.9189389293980522, -3.71193434568343),
    (1.999999999, 0.9189385383178988, -4.8632257420842775),
    (2.0, 0.9189385332046728, None),
    (2.000000001, 0.9189385280914466, -4.863225732240975),
    (2.0000001, 0.9189381370113331, -3.711933592167554),
    (2.00001, 0.918910426654125, -2.560668211686457),
    (2.001, 0.9172783073631868, -1.4109861016819838),
    (2.01, 0.9080394089164023, -0.8450873772127427),
    (2.090909090909091, 0.8671562462483305, -0.349709320416577),
    (2.1, 0.8640631296962166, -0.33113255532475017),
    (2.1818181818181817, 0.8419015396151287, -0.2241238894496781),
    (2.272727272727273, 0.8245797653617802, -0.16277301944548137),
    (2.3636363636363638, 0.8115911720274747, -0.12568250949549115),
    (2.4545454545454546, 0.801363550430717, -0.10082523895228734),
    (2.5, 0.7970037362681667, -0.09126355982118144),
    (2.5454545454545454, 0.7930459803423483, -0.0830832165699042),
    (2.6363636363636362, 0.7861216796387799, -0.0698584660537627),
    (2.727272727272727, 0.7802526979556574, -0.05967929234340407),
    (2.8181818181818183, 0.7752061683892896, -0.051646397839008526),
    (2.909090909090909, 0.7708151992330929, -0.04517866293977092),
    (3.0, 0.766956434606257, -0.03988399722150689),
    (3.090909090909091, 0.7635363902173691, -0.03548855510443505),
    (3.1818181818181817, 0.7604827347336247, -0.03179557637950426),
    (3.272727272727273, 0.7577385124304256, -0.02866028787344217),
    (3.3636363636363638, 0.7552581930881302, -0.02597398817573207),
    (3.4545454545454546, 0.7530048988857603, -0.02365361851837535),
    (3.5, 0.7519537259820406, -0.0226099352911703),
    (3.5454545454545454, 0.7509484129800302, -0.021634734533606675),
    (3.6363636363636362, 0.7490637210214662, -0.019866653812081476),
    (3.727272727272727, 0.7473299243844003, -0.01830903402173519),
    (3.8181818181818183, 0.7457294178942826, -0.016929414342257514),
    (3.909090909090909, 0.7442472591227448, -0.015701419411552963),
    (4.0, 0.7428706786403717, -0.014603427549890493),
    (4.5, 0.7367626283869178, -0.010221345108237115),
    (6.0, 0.7264616725709424, -0.004616592352235201),
    (8.0, 0.7200326173518024, -0.002238744398497703),
    (10.0, 0.7165972078183148, -0.0013180055511478944),
    (16.0, 0.7119393427119814, -0.0004572957450539446),
    (30.0, 0.7086706566273435, -0.0001192101495647373),
    (100.0, 0.7062497067223581, -1.0033969940204634e-05),
    (1000.0, 0.7053579606568031, -9.784214704034245e-08),
    (10000.0, 0.705270012825384, -9.759763429402398e-10),
    (INF, 0.7052602544175697, None),
]


def _rho_mp(x, a):
    z = x * x
    if a == mpmath.inf:
        return mpmath.expm1(z / 2)
    if a == 0:
        return mpmath.log1p(z / 2)
    if a == 2:
        return z / 2
    b = abs(a - 2)
    return b / a * ((z / b + 1) ** (a / 2) - 1)


def _oracle(alpha: float, slope: bool = True) -> tuple[float, float | None]:
    """(log Z, d log Z/dα) at 30 digits by mpmath (the cut at x = 64 for α > 3 drops < 1e-1000)."""
    with mpmath.workdps(30):
        a = mpmath.inf if alpha == INF else mpmath.mpf(alpha)
        pts = [0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 6, 8, 16, 64] if alpha > 3 else [0, 0.5, 1, 2, 4, 8, 16, 64, 256,
                                                                                4096, mpmath.inf]
        z = 2 * mpmath.quad(lambda x: mpmath.exp(-_rho_mp(x, a)), pts)
        if not slope or alpha in (2.0, INF):
            return float(mpmath.log(z)), None
        # an explicit step, small against |α − 2| (ρ's third α-derivative grows like 1/(α−2)² there):
        # mpmath's default step depends on the working precision and is unreliable at α = 0
        step = min(mpmath.mpf(10) ** -12, abs(a - 2) * mpmath.mpf(10) ** -6)
        d = 2 * mpmath.quad(lambda x: mpmath.diff(lambda aa: _rho_mp(x, aa), a, h=step) * mpmath.exp(-_rho_mp(x, a)),
                            pts)
        return float(mpmath.log(z)), float(-d / z)


def test_the_grid_is_dense_where_the_issue_asks():
    alphas = [a for a, _, _ in ORACLE]
    assert all(any(abs(a - 0.005 * k) < 1e-12 for a in alphas) for k in range(60))
    assert all(any(abs(a - n / 11) < 1e-15 for a in alphas) for n in range(45))
    assert 2 - 1e-9 in alphas and 2 + 1e-9 in alphas and INF in alphas


def test_log_partition_float64_within_1e_8_of_the_integral():
    alpha = torch.tensor([a for a, _, _ in ORACLE], dtype=torch.float64, requires_grad=True)
    value = log_partition(alpha)
    (slope,) = torch.autograd.grad(value.sum(), alpha)
    for i, (a, want, want_slope) in enumerate(ORACLE):
        assert abs(value[i].item() - want) <= 1e-8, f"log Z({a}) = {value[i].item()!r}, integral {want!r}"
        if want_slope is not None:
            err = abs(slope[i].item() - want_slope)
            assert err <= 1e-8 * max(1.0, abs(want_slope)), f"d log Z/dα({a}) = {slope[i].item()!r}, {want_slope!r}"
    assert slope[[i for i, (a, _, _) in enumerate(ORACLE) if a == INF]].item() == 0.0


def test_log_partition_float32_within_1e_7_of_the_integral():
    alpha = torch.tensor([a for a, _, _ in ORACLE], dtype=torch.float32, requires_grad=True)
    value = log_partition(alpha)
    (slope,) = torch.autograd.grad(value.sum(), alpha)
    assert value.dtype == torch.float32 and slope.dtype == torch.float32
    for i, (a, want, want_slope) in enumerate(ORACLE):
        a32 = float(alpha[i].detach())
        if math.isfinite(a) and a32 != a:  # the oracle at the float32 α, to first order
            if want_slope is None:
                continue
            want += (a32 - a) * want_slope
        assert abs(value[i].item() - want) <= 1e-7, f"float32 log Z({a})"
        if want_slope is not None and a32 != 2.0:  # (the slope moves by ≈ (α32 − α)/(4|α − 2|) near 2)
            shift = abs(a32 - a) * (10 + 0.5 / abs(a - 2)) if a != 2 else 0.0
            assert abs(slope[i].item() - want_slope) <= 1e-7 * max(1.0, abs(want_slope)) + shift, a


def test_oracle_values_are_the_integral():
    """A few of the cached values recomputed (so the cache cannot drift from its definition)."""
    for a, want, want_slope in [ORACLE[9], ORACLE[17], ORACLE[-1]]:
        value, slope = _oracle(a, slope=a == ORACLE[9][0])
        assert value == pytest.approx(want, abs=1e-14)
        if slope is not None:
            assert slope == pytest.approx(want_slope, abs=1e-13)


@pytest.mark.slow
def test_every_cached_oracle_value_is_the_integral():
    for k, (a, want, want_slope) in enumerate(ORACLE):
        if a >= 1e4:
            continue  # about a minute in mpmath; checked by the fast test's quadrature comparison instead
        value, slope = _oracle(a, slope=k % 10 == 0)
        assert value == pytest.approx(want, abs=1e-14), a
        if slope is not None and want_slope is not None:
            assert slope == pytest.approx(want_slope, abs=1e-13), a


def test_our_quadrature_matches_the_oracle_and_extends_it():
    alphas = torch.tensor([a for a, _, _ in ORACLE], dtype=torch.float64)
    value, slope = integrate_log_partition(alphas)
    for i, (a, want, want_slope) in enumerate(ORACLE):
        assert abs(value[i].item() - want) <= 1e-12, a
        if want_slope is not None:
            assert abs(slope[i].item() - want_slope) <= 1e-12 * max(1.0, abs(want_slope)), a
    # beyond the oracle (α up to 1e12) and between its points: the table against the quadrature
    gen = torch.Generator().manual_seed(0)
    big = torch.cat([10 ** (4 + 8 * torch.rand(200, generator=gen, dtype=torch.float64)),
                     torch.rand(2000, generator=gen, dtype=torch.float64) * 6,
                     2 + (2 * torch.rand(500, generator=gen, dtype=torch.float64) - 1)
                     * 10 ** (-12 * torch.rand(500, generator=gen, dtype=torch.float64))])
    want_v, want_s = integrate_log_partition(big)
    got_v, got_s = log_partition_and_slope(big)
    assert (got_v - want_v).abs().max() <= 1e-9
    assert ((got_s - want_s).abs() / want_s.abs().clamp(min=1)).max() <= 1e-9


def test_the_knots_are_where_log_z_bends():
    layout = knot_layout()
    low = torch.from_numpy(layout["low"])
    assert torch.diff(low[low < 0.3]).max() < 2e-3  # the issue's error came from 0.1-wide steps here
    assert sum(v.size for v in layout.values()) < 40_000  # the shipped file stays small


def test_alpha_two_exactly_and_the_nll_gradient_there():
    """At α = 2 log Z is ½·log 2π; its slope (−∞ there) is taken at 2 − gap, like ∂ρ/∂α, so the NLL's
    α-gradient has zero mean under the model there too."""
    alpha = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    value = log_partition(alpha)
    (slope,) = torch.autograd.grad(value, alpha)
    assert value.item() == pytest.approx(LOG_Z_TWO, abs=1e-15)
    below = log_partition_and_slope(torch.tensor(2 - ALPHA_GRAD_GAP, dtype=torch.float64))[1]
    assert slope.item() == pytest.approx(below.item(), abs=1e-6)
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # the α = 2 density
    a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(nll(x, a, 1.0).mean(), a)
    assert abs(grad.item()) < 0.05  # E[∂ρ/∂α] + d log Z/dα = 0 up to sampling noise (≈ 0.01 here)
    assert torch.isfinite(torch.autograd.grad(rho(x, a, 1.0).sum(), a)[0])
