"""Batched image augmentations on the training device: every image of a batch gets its own random view,
with no per-image Python and no DataLoader. Plain tensor ops (affine_grid/grid_sample, a grouped
convolution, an HSV round trip), so they run on a CPU or a GPU alike.

    params = draw(recipe, n, generator)            every random number for n images, in one fixed order
    views  = apply(x, params)                      x float (n, C, H, W) in [0, 1] -> the same shape
    views  = augment(x, recipe, generator, total=global_batch, rank=r, world=w)   draw for the global batch,
                                                                                  keep this rank's rows

Per image, in this order (the torchvision transforms VICReg's recipes use, at the same parameters):

- random resized crop: area fraction s ~ U(scale), log aspect ratio ~ U(log ratio), 10 tries for a box
  inside the image, else the whole image (torchvision's fallback for a square image); the box is resampled
  to the full size bilinearly (one affine_grid + grid_sample for the batch, the box's position continuous);
- horizontal flip with probability `flip` (folded into the same affine map);
- colour jitter with probability `jitter_p`: brightness b·x, contrast c·x + (1 − c)·mean(gray(x)),
  saturation s·x + (1 − s)·gray(x), hue h shifted by δ in HSV; factors b ~ U(1 ± 0.4), c ~ U(1 ± 0.4),
  s ~ U(1 ± 0.2), δ ~ U(±0.1) for (0.4, 0.4, 0.2, 0.1); clamped to [0, 1] after each. torchvision applies
  the four in a random order per call; here the order is fixed (brightness, contrast, saturation, hue);
- grayscale with probability `gray_p`: 0.2989 R + 0.587 G + 0.114 B in every channel (torchvision's weights);
- Gaussian blur with probability `blur_p`: σ ~ U(blur_sigma), a `blur_kernel`-tap separable kernel with
  reflected borders (one grouped convolution, a kernel per image);
- solarise with probability `solarize_p`: x ↦ 1 − x where x ≥ 128/255 (PIL's threshold 128).

Saturation, hue and grayscale act on colour (3-channel) images only; on one channel they are the identity.

Randomness: `draw` takes a torch.Generator (a `Batch.generator(stream)`, seeded by (seed, stream, step)),
so a step's views are the same however the run was stopped and resumed, and on any number of ranks.

Recipes (`RECIPES`, a pair of per-view settings; Bardes et al. 2022 and solo-learn's CIFAR configuration):
  cifar     solo-learn's CIFAR VICReg: crop (0.2, 1), jitter (0.4, 0.4, 0.2, 0.1) p 0.8, gray 0.2, no blur,
            solarise 0.1, flip 0.5, both views alike (the default)
  course    the VICReg course's recipe: the same crop, flip, jitter and gray, blur (3 taps) p 0.5, no solarise
  official  the ImageNet recipe, asymmetric: blur p 1.0 / 0.1, solarise p 0.0 / 0.2 (blur kernel 3 at 32 px)
  crop_flip crop and flip only (for digits and other images where colour does not vary)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

__all__ = ["GRAY_WEIGHTS", "RECIPES", "AugmentParams", "Recipe", "apply", "augment", "draw", "grayscale",
           "hsv_to_rgb", "recipe_pair", "rgb_to_hsv"]

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 as torchvision rounds it (rgb_to_grayscale)
SOLARIZE_THRESHOLD = 128 / 255
CROP_TRIES = 10


@dataclass(frozen=True)
class Recipe:
    """One view's augmentation settings (probabilities in [0, 1])."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 3
    solarize_p: float = 0.1
    crop: bool = True

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop scale must satisfy 0 < min ≤ max ≤ 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop ratio must satisfy 0 < min ≤ max, got {self.crop_ratio}")
        for name in ("flip", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability, got {getattr(self, name)}")
        b, c, s, h = self.jitter
        if min(b, c, s) < 0 or not 0 <= h <= 0.5:
            raise ValueError(f"jitter needs brightness, contrast, saturation ≥ 0 and hue in [0, 0.5], got "
                             f"{self.jitter}")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be odd and positive, got {self.blur_kernel}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur sigma must satisfy 0 < min ≤ max, got {self.blur_sigma}")


_CIFAR = Recipe()
RECIPES: dict[str, tuple[Recipe, Recipe]] = {
    "cifar": (_CIFAR, _CIFAR),
    "course": (replace(_CIFAR, blur_p=0.5, solarize_p=0.0),) * 2,
    "official": (replace(_CIFAR, blur_p=1.0, solarize_p=0.0), replace(_CIFAR, blur_p=0.1, solarize_p=0.2)),
    "crop_flip": (replace(_CIFAR, jitter_p=0.0, gray_p=0.0, solarize_p=0.0),) * 2,
}


def recipe_pair(name: str, crop_scale_min: float | None = None) -> tuple[Recipe, Recipe]:
    """The two views' recipes of `name`, with the crop's smallest area fraction replaced if given."""
    if name not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {name!r}; choose one of {', '.join(RECIPES)}")
    pair = RECIPES[name]
    if crop_scale_min is None:
        return pair
    return tuple(replace(r, crop_scale=(float(crop_scale_min), r.crop_scale[1])) for r in pair)  # type: ignore[return-value]


@dataclass
class AugmentParams:
    """Every random choice for n images: the crop box (centre and size as fractions of the image), the
    flip sign, the jitter factors and the masks of what is applied."""

    centre: torch.Tensor  # (n, 2) x, y in [0, 1]
    size: torch.Tensor  # (n, 2) width, height fractions in (0, 1]
    flip: torch.Tensor  # (n,) bool
    jitter: torch.Tensor  # (n,) bool
    factors: torch.Tensor  # (n, 4) brightness, contrast, saturation factors and the hue shift
    gray: torch.Tensor  # (n,) bool
    blur: torch.Tensor  # (n,) bool
    sigma: torch.Tensor  # (n,)
    solarize: torch.Tensor  # (n,) bool
    recipe: Recipe

    def rows(self, index: torch.Tensor | slice) -> AugmentParams:
        """These parameters for a subset of the images (a rank's share of the global batch)."""
        fields = ("centre", "size", "flip", "jitter", "factors", "gray", "blur", "sigma", "solarize")
        return AugmentParams(**{f: getattr(self, f)[index] for f in fields}, recipe=self.recipe)


def _uniform(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def draw(recipe: Recipe, n: int, generator: torch.Generator, aspect: float = 1.0) -> AugmentParams:
    """All random numbers for n images, drawn on the generator's device in a fixed order (so what is drawn
    for image i does not depend on which operations the recipe turns on). aspect = W / H of the images."""
    device = generator.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device)

    area = _uniform(rand(n, CROP_TRIES), recipe.crop_scale)
    log_ratio = _uniform(rand(n, CROP_TRIES), (math.log(recipe.crop_ratio[0]), math.log(recipe.crop_ratio[1])))
    ratio = torch.exp(log_ratio)
    # As fractions of the image: w·h = area (in pixels, (w W)(h H) = area·W·H) and (w W)/(h H) = ratio.
    width = torch.sqrt(area * ratio / aspect)
    height = torch.sqrt(area / ratio * aspect)
    fits = (width <= 1) & (height <= 1)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)  # the first try that fits (0 when none does)
    found = fits.any(dim=1)
    width = torch.where(found, width.gather(1, first)[:, 0], torch.ones(n, device=device))
    height = torch.where(found, height.gather(1, first)[:, 0], torch.ones(n, device=device))
    position = rand(n, 2)
    if not recipe.crop:
        width, height = torch.ones(n, device=device), torch.ones(n, device=device)
    size = torch.stack([width, height], dim=1)
    centre = size / 2 + position * (1 - size)  # the box lies inside the image
    flip = rand(n) < recipe.flip
    jitter = rand(n) < recipe.jitter_p
    b, c, s, h = recipe.jitter
    u = rand(n, 4)
    factors = torch.stack([_uniform(u[:, 0], (max(0.0, 1 - b), 1 + b)), _uniform(u[:, 1], (max(0.0, 1 - c), 1 + c)),
                           _uniform(u[:, 2], (max(0.0, 1 - s), 1 + s)), _uniform(u[:, 3], (-h, h))], dim=1)
    gray = rand(n) < recipe.gray_p
    blur = rand(n) < recipe.blur_p
    sigma = _uniform(rand(n), recipe.blur_sigma)
    solarize = rand(n) < recipe.solarize_p
    return AugmentParams(centre, size, flip, jitter, factors, gray, blur, sigma, solarize, recipe)


# ---------------------------------------------------------------------------------------------------
# The operations, each on a whole batch with per-image parameters


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) -> (n, 1, H, W): 0.2989 R + 0.587 G + 0.114 B; one channel is returned as it is."""
    if x.shape[1] != 3:
        return x
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    grey = delta == 0
    safe = torch.where(grey, torch.ones_like(delta), delta)
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(grey, torch.zeros_like(h), (h / 6.0) % 1.0)
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV (hue in [0, 1)) -> RGB."""
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # For each sector i, which of (v, q, p, t) each channel takes.
    table = torch.stack([torch.stack(c, dim=1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
                                                          (v, p, q))], dim=1)  # (n, 6, 3, H, W)
    return table.gather(1, i[:, None, None].expand(-1, 1, 3, -1, -1)).squeeze(1)


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _crop_flip(x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """Resample each image's box to the full size, mirrored where flipped: x_in = A · x_out (normalised)."""
    n = x.shape[0]
    sign = torch.where(p.flip, -1.0, 1.0).to(x.dtype)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = p.size[:, 0].to(x.dtype) * sign
    theta[:, 1, 1] = p.size[:, 1].to(x.dtype)
    theta[:, :, 2] = (2 * p.centre - 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jitter(x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    f = p.factors.to(x.dtype)
    out = (x * _per_image(f[:, 0])).clamp(0, 1)
    mean = grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
    out = (_per_image(f[:, 1]) * out + (1 - _per_image(f[:, 1])) * mean).clamp(0, 1)
    if x.shape[1] == 3:
        out = (_per_image(f[:, 2]) * out + (1 - _per_image(f[:, 2])) * grayscale(out)).clamp(0, 1)
        hsv = rgb_to_hsv(out)
        hue = (hsv[:, 0] + f[:, 3].view(-1, 1, 1)) % 1.0
        out = hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)).clamp(0, 1)
    return torch.where(_per_image(p.jitter), out, x)


def _blur(x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    n, c, h, w = x.shape
    k = p.recipe.blur_kernel
    taps = torch.arange(k, dtype=x.dtype, device=x.device) - (k - 1) / 2
    kernel = torch.exp(-taps.square()[None] / (2 * p.sigma.to(x.dtype).square()[:, None]))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (n, k)
    weight = kernel.repeat_interleave(c, dim=0)  # one kernel per image, for each of its channels
    pad = (k - 1) // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode=mode), weight.view(n * c, 1, 1, k), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode=mode), weight.view(n * c, 1, k, 1), groups=n * c)
    return torch.where(_per_image(p.blur), flat.view(n, c, h, w), x)


def apply(x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """The augmented views of float images x (n, C, H, W) in [0, 1] under parameters `p` (n rows)."""
    if x.shape[0] != p.flip.shape[0]:
        raise ValueError(f"{x.shape[0]} images but parameters for {p.flip.shape[0]}")
    if x.shape[0] == 0:
        return x
    r = p.recipe
    out = _crop_flip(x, p) if r.crop or r.flip > 0 else x
    if r.jitter_p > 0:
        out = _jitter(out, p)
    if r.gray_p > 0 and x.shape[1] == 3:
        out = torch.where(_per_image(p.gray), grayscale(out).expand_as(out), out)
    if r.blur_p > 0:
        out = _blur(out, p)
    if r.solarize_p > 0:
        out = torch.where(_per_image(p.solarize) & (out >= SOLARIZE_THRESHOLD), 1 - out, out)
    return out


def augment(x: torch.Tensor, recipe: Recipe, generator: torch.Generator, *, total: int | None = None, rank: int = 0,
            world: int = 1) -> torch.Tensor:
    """Views of x (this rank's images of a global batch of `total`, rows rank::world): the parameters are
    drawn for all `total` images, then this rank's rows taken, so the views do not depend on the ranks."""
    total = x.shape[0] if total is None else int(total)
    params = draw(recipe, total, generator, aspect=x.shape[3] / x.shape[2])
    if world > 1:
        params = params.rows(slice(rank, None, world))
    return apply(x.float(), params)
