"""Image representations for likelihoods: linear maps T of an image with |det J| = 1 (Barron 2019, §VAE).

A likelihood placed on the coefficients y = T(x) is a likelihood of the image itself when T is linear
and volume-preserving: p_x(x) = p_y(T x)·|det J_T| = p_y(T x). So ELBOs computed on pixels, on DCT
coefficients and on wavelet coefficients are ELBOs of the same image and compare. Each map here is a
composition of a colour map (over channels) and a spatial map (per channel), on NCHW float32 tensors:

    colour  "rgb"   identity
            "yuv"   Barron's scaled YUV: y = s·K·rgb, K the YUV matrix of TF's rgb_to_yuv
                    (Y = .299R + .587G + .114B, U = −.14714119R − .28886916G + .43601035B,
                    V = .61497538R − .51496512G − .10001026B) and s = det(K)^(−1/3) = 1.580227820074,
                    so det(sK) = 1 (det K = 0.25342). Applies to 3-channel images only.
    spatial "pixels"  identity
            "dct"     the orthonormal 2-D DCT-II of the whole image, per channel: Y = D_H X D_Wᵀ with
                      D_N[k, n] = s_k·cos(π(2n + 1)k / 2N), s_0 = √(1/N), s_k = √(2/N). Orthonormal:
                      det = ±1 for every size. Layout: the DC term at the top left, frequency growing
                      rightwards and downwards.
            "wavelet" Barron's CDF 9/7 biorthogonal wavelet (the JPEG 2000 9/7 filters scaled by √2 and
                      1/√2), non-standard (pyramid) decomposition with reflecting boundaries.

The wavelet, one 1-D level of a length-N signal: whole-sample symmetric extension (A B C D → … C B A B C D
C B …, repeated without bound for filters longer than the signal), the 9-tap lowpass centred on the even
samples and the 7-tap highpass on the odd ones:

    low[k]  = Σ_t h0[t]·x[2k + t]        k = 0 … ⌈N/2⌉ − 1     h0 = 0.852698679009, ±0.377402855613,
    high[k] = Σ_t h1[t]·x[2k + 1 + t]    k = 0 … ⌊N/2⌋ − 1          ±−0.110624404418, ±−0.023849465020,
                                                                     ±0.037828455507   (Σ h0 = √2)
                                                               h1 = 0.788485616406, ±−0.418092273222,
                                                                     ±−0.040689417609, ±0.064538882629

N coefficients for N samples (non-expansive); the lows come first. A 2-D level applies it to every column
and then every row of the current lowpass block, which lands in the top-left corner with the three detail
subbands beside and below it; the next level recurses into that block. Scale base 1: no subband is
rescaled (a base b would add Σ_d n_d·d·log b to log|det|).

Volume. The analysis matrix of one level is the product of lifting steps (unit triangular, det 1) and a
scaling of the lows by ζ = 1.1496043989 and the highs by 1/ζ. For even N there are as many lows as highs
and det = ±1 exactly; for odd N there is one more low and |det| = ζ. So a decomposition is
volume-preserving exactly while every side it splits is even: `wavelet_levels(H, W)` is the number of
halvings of sides that stay even (5 for 32×32, 3 for 8×8, and 2 for 28×28, whose third level would split
7 samples). Instead of padding 28 to 32 — any padding is expansive, giving a 1,024-dimensional
"density" of a 784-dimensional image, which is no density of the image — the decomposition stops there
and keeps a 7×7 lowpass block (49 of 784 coefficients); `Representation.log_abs_det` is then 0. Asked
for more levels than that (`levels=`), the map is still exact and invertible, and `log_abs_det` is the
exact log|det J| (Σ over odd splits of the other side's length · log ζ), which a likelihood adds:
log p(x) = log p(Tx) + log|det J|. Barron's own level count, ⌈log₂ min(H, W)⌉, equals ours for powers
of two (`barron_levels`).

Every map is a set of small matrices (built in float64, kept as non-persistent float32 and float64
buffers, so a representation adds nothing to a model's weights) applied by matmuls: GPU-friendly, autograd-friendly,
and computed in float32 with autocast off (a likelihood with scales of 1e-3 needs the residual's low bits).
The inverse uses the inverted matrices (the synthesis filters: the analysis filters' alternating-sign swaps).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "CDF97_HIGHPASS_HALF",
    "CDF97_LOWPASS_HALF",
    "COLOURS",
    "REPRESENTATIONS",
    "SYUV_SCALE",
    "WAVELET_ZETA",
    "Region",
    "Representation",
    "barron_levels",
    "cdf97_filters",
    "dct_matrix",
    "layout",
    "make_representation",
    "reflect_index",
    "rgb_to_syuv_matrix",
    "wavelet_levels",
    "wavelet_log_abs_det",
    "wavelet_matrix",
]

REPRESENTATIONS = ("pixels", "dct", "wavelet")
COLOURS = ("rgb", "yuv")
TITLES = {"pixels": "pixels", "dct": "DCT", "wavelet": "CDF 9/7 wavelet", "rgb": "RGB", "yuv": "YUV"}

# TF's rgb_to_yuv kernel, rows Y, U, V (yuv = K @ rgb).
_YUV = np.array([[0.299, 0.587, 0.114],
                 [-0.14714119, -0.28886916, 0.43601035],
                 [0.61497538, -0.51496512, -0.10001026]], dtype=np.float64)
SYUV_SCALE = float(np.linalg.det(_YUV) ** (-1.0 / 3.0))  # 1.580227820074…

# Barron's CDF 9/7 half-filters (centre tap first); the full filters are symmetric.
CDF97_LOWPASS_HALF = (0.852698679009, 0.377402855613, -0.110624404418, -0.023849465020, 0.037828455507)
CDF97_HIGHPASS_HALF = (0.788485616406, -0.418092273222, -0.040689417609, 0.064538882629)


def rgb_to_syuv_matrix() -> np.ndarray:
    """Barron's volume-preserving YUV: s·K (3×3, float64), det = 1."""
    return SYUV_SCALE * _YUV


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix (n×n, float64): rows are frequencies, D Dᵀ = I."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def cdf97_filters() -> tuple[dict[int, float], dict[int, float]]:
    """The analysis lowpass (9 taps) and highpass (7 taps) as {offset: weight}, offsets centred on 0."""
    def full(half: tuple[float, ...]) -> dict[int, float]:
        return {t: half[abs(t)] for t in range(1 - len(half), len(half))}
    return full(CDF97_LOWPASS_HALF), full(CDF97_HIGHPASS_HALF)


def reflect_index(i: int, n: int) -> int:
    """Position i of the whole-sample symmetric extension of a length-n signal, folded into [0, n)
    (A B C D → … D C B A B C D C B A B …, for any i however far outside)."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i %= period
    return i if i < n else period - i


@functools.lru_cache(maxsize=64)
def wavelet_matrix(n: int) -> np.ndarray:
    """One 1-D CDF 9/7 analysis level for length n (n×n, float64): the ⌈n/2⌉ lows, then the ⌊n/2⌋ highs."""
    if n < 2:
        raise ValueError(f"a wavelet level needs at least 2 samples, got {n}")
    lo, hi = cdf97_filters()
    lows = (n + 1) // 2
    a = np.zeros((n, n))
    for row, (centre, taps) in enumerate([(2 * k, lo) for k in range(lows)] + [(2 * k + 1, hi) for k in range(n // 2)]):
        for t, w in taps.items():
            a[row, reflect_index(centre + t, n)] += w
    a.setflags(write=False)
    return a


# |det| of one 1-D level of odd length (one low more than highs): the lows' scaling factor ζ = √2/K.
WAVELET_ZETA = float(abs(np.linalg.det(wavelet_matrix(3))))


def wavelet_levels(height: int, width: int) -> int:
    """The levels a volume-preserving decomposition can take: halvings while both sides are even."""
    levels = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) > 1:
        height, width, levels = height // 2, width // 2, levels + 1
    return levels


def barron_levels(height: int, width: int) -> int:
    """Barron's level count, ⌈log₂ min(H, W)⌉ (`get_max_num_levels`): ours for powers of two."""
    return max(0, math.ceil(math.log2(min(height, width))))


def _level_shapes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """The block each level splits: (H, W), (⌈H/2⌉, ⌈W/2⌉), …"""
    shapes = []
    for _ in range(levels):
        if min(height, width) < 2:
            raise ValueError(f"{levels} wavelet levels are too many for this image: a level would split a "
                             f"{height}×{width} block")
        shapes.append((height, width))
        height, width = (height + 1) // 2, (width + 1) // 2
    return shapes


def wavelet_log_abs_det(height: int, width: int, levels: int) -> float:
    """log|det| of the 2-D decomposition of one channel: each odd split adds (other side)·log ζ."""
    total = 0.0
    for h, w in _level_shapes(height, width, levels):
        total += (w * (h % 2) + h * (w % 2)) * math.log(WAVELET_ZETA)
    return total


@dataclass(frozen=True)
class Region:
    """A rectangle of the coefficient layout and what it holds (a subband, the DC term, ...)."""

    name: str
    top: int
    left: int
    height: int
    width: int


def layout(representation: str, height: int, width: int, levels: int | None = None) -> list[Region]:
    """The regions of a representation's coefficient layout, for drawing maps: wavelet subbands (level 1
    is the finest), the DCT's DC term and the rest, or the whole pixel grid."""
    if representation == "pixels":
        return [Region("pixels", 0, 0, height, width)]
    if representation == "dct":
        return [Region("DC", 0, 0, 1, 1), Region("AC (frequency ↓ vertical, → horizontal)", 0, 0, height, width)]
    if representation != "wavelet":
        raise ValueError(f"unknown representation {representation!r}; choose one of {', '.join(REPRESENTATIONS)}")
    levels = wavelet_levels(height, width) if levels is None else levels
    regions = []
    for d, (h, w) in enumerate(_level_shapes(height, width, levels), start=1):
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        regions += [Region(f"level {d} horizontal detail", h2, 0, h - h2, w2),
                    Region(f"level {d} vertical detail", 0, w2, h2, w - w2),
                    Region(f"level {d} diagonal detail", h2, w2, h - h2, w - w2)]
    h, w = height, width
    for _ in range(levels):
        h, w = (h + 1) // 2, (w + 1) // 2
    regions.append(Region(f"lowpass residual ({h}×{w})", 0, 0, h, w))
    return regions




class Representation(nn.Module):
    """y = T(x) on (B, C, H, W) float tensors: a colour map over C, then a spatial map per channel.

    forward(x) and inverse(y) keep the shape; `log_abs_det` is log|det J_T| per image (0 for every map
    the lab trains with); `is_identity` says T = I (pixels, RGB), where forward returns x itself.
    The matrices are non-persistent buffers: they move with .to(device) and never enter a state_dict.
    """

    def __init__(self, image_shape: tuple[int, int, int], spatial: str = "pixels", colour: str = "rgb",
                 levels: int | None = None) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if spatial not in REPRESENTATIONS:
            raise ValueError(f"unknown representation {spatial!r}; choose one of {', '.join(REPRESENTATIONS)}")
        if colour not in COLOURS:
            raise ValueError(f"unknown colour space {colour!r}; choose one of {', '.join(COLOURS)}")
        if colour == "yuv" and c != 3:
            raise ValueError(f"the YUV colour space needs 3-channel images; these have {c} (use rgb)")
        self.image_shape = (c, h, w)
        self.spatial, self.colour = spatial, colour
        self.levels = 0
        log_det = 0.0
        if colour == "yuv":
            self._matrix("colour_matrix", rgb_to_syuv_matrix())
            self._matrix("colour_inverse", np.linalg.inv(rgb_to_syuv_matrix()))
            log_det += h * w * math.log(abs(np.linalg.det(rgb_to_syuv_matrix())))
        if spatial == "dct":
            for name, n in (("h", h), ("w", w)):
                d = dct_matrix(n)
                self._matrix(f"dct_{name}", d)
                self._matrix(f"dct_{name}_t", d.T)
        elif spatial == "wavelet":
            self.levels = wavelet_levels(h, w) if levels is None else int(levels)
            self._shapes = _level_shapes(h, w, self.levels)
            for i, (bh, bw) in enumerate(self._shapes):
                ah, aw = wavelet_matrix(bh), wavelet_matrix(bw)
                self._matrix(f"wav{i}_h", ah)
                self._matrix(f"wav{i}_wt", aw.T)
                self._matrix(f"inv{i}_h", np.linalg.inv(ah))
                self._matrix(f"inv{i}_wt", np.linalg.inv(aw).T)
            log_det += c * wavelet_log_abs_det(h, w, self.levels)
        self.log_abs_det = log_det if abs(log_det) > 1e-9 else 0.0

    @property
    def is_identity(self) -> bool:
        return self.spatial == "pixels" and self.colour == "rgb"

    @property
    def title(self) -> str:
        colour = f" + {TITLES[self.colour]}" if self.image_shape[0] == 3 else ""
        return TITLES[self.spatial] + colour

    def regions(self) -> list[Region]:
        return layout(self.spatial, self.image_shape[1], self.image_shape[2], self.levels or None)

    # -- the maps ----------------------------------------------------------------------------------------
    def _matrix(self, name: str, a: np.ndarray) -> None:
        """Register matrix `a` as two non-persistent buffers: float32 (training) and float64 (`name`_f64,
        for exact checks: float32 entries alone move log|det| of a 3,072-pixel map by ~1e-4)."""
        self.register_buffer(name, torch.tensor(a, dtype=torch.float32), persistent=False)
        self.register_buffer(name + "_f64", torch.tensor(a, dtype=torch.float64), persistent=False)

    def _m(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The matrix `name` for an input like `like`: float64 for float64 inputs, else float32."""
        m = getattr(self, name + "_f64" if like.dtype == torch.float64 else name)
        return m if m.dtype == like.dtype else m.to(like.dtype)

    def _colour(self, x: torch.Tensor, matrix: str) -> torch.Tensor:
        return torch.einsum("oc,bchw->bohw", self._m(matrix, x), x)

    def _wavelet(self, x: torch.Tensor, level: int) -> torch.Tensor:
        if level == len(self._shapes):
            return x
        y = self._m(f"wav{level}_h", x) @ x @ self._m(f"wav{level}_wt", x)
        h2, w2 = (y.shape[-2] + 1) // 2, (y.shape[-1] + 1) // 2
        low = self._wavelet(y[..., :h2, :w2], level + 1)
        return torch.cat([torch.cat([low, y[..., :h2, w2:]], dim=-1), y[..., h2:, :]], dim=-2)

    def _unwavelet(self, y: torch.Tensor, level: int) -> torch.Tensor:
        if level == len(self._shapes):
            return y
        h2, w2 = (y.shape[-2] + 1) // 2, (y.shape[-1] + 1) // 2
        low = self._unwavelet(y[..., :h2, :w2], level + 1)
        z = torch.cat([torch.cat([low, y[..., :h2, w2:]], dim=-1), y[..., h2:, :]], dim=-2)
        return self._m(f"inv{level}_h", z) @ z @ self._m(f"inv{level}_wt", z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The coefficients T(x), (B, C, H, W) float32 (x itself for pixels + RGB)."""
        if self.is_identity:
            return x
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = x if x.dtype == torch.float64 else x.float()
            if self.colour == "yuv":
                y = self._colour(y, "colour_matrix")
            if self.spatial == "dct":
                y = self._m("dct_h", y) @ y @ self._m("dct_w_t", y)
            elif self.spatial == "wavelet":
                y = self._wavelet(y, 0)
            return y

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """T⁻¹(y): the image whose coefficients are y."""
        if self.is_identity:
            return y
        with torch.autocast(device_type=y.device.type, enabled=False):
            x = y if y.dtype == torch.float64 else y.float()
            if self.spatial == "dct":
                x = self._m("dct_h_t", x) @ x @ self._m("dct_w", x)  # orthonormal: the inverse is the transpose
            elif self.spatial == "wavelet":
                x = self._unwavelet(x, 0)
            if self.colour == "yuv":
                x = self._colour(x, "colour_inverse")
            return x

    def extra_repr(self) -> str:
        levels = f", levels={self.levels}" if self.spatial == "wavelet" else ""
        return f"{self.spatial}, {self.colour}, image {self.image_shape}{levels}"


def make_representation(image_shape: tuple[int, int, int], spatial: str = "pixels", colour: str = "rgb",
                        levels: int | None = None) -> Representation:
    """The representation a config names (colour is ignored for grey images: it does not apply)."""
    if int(image_shape[0]) != 3:
        colour = "rgb"
    return Representation(tuple(image_shape), spatial, colour, levels)
