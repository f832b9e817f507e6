"""A small convolutional VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017, arXiv 1711.00937).

The encoder maps an image (C, S, S) to a grid of G×G vectors of D numbers, z_e; each vector is replaced by
its nearest of K codes, z_q; the decoder maps z_q back to an image in [0, 1]:

    k(i) = argmin_k ‖z_e(i) − e_k‖²,   z_q(i) = e_{k(i)}
    straight-through: the decoder sees z_q, and the gradient of z_q is copied to z_e
    commitment = Σ_i ‖z_e(i) − sg[z_q(i)]‖²        codebook term (without EMA) = Σ_i ‖sg[z_e(i)] − e_k(i)‖²

Codebook updates (`VectorQuantizer`): by exponential moving averages (the paper's appendix; the default) of
each code's count N_k and sum m_k of assigned vectors, with decay γ and Laplace smoothing ε,

    N_k ← γ N_k + (1 − γ) n_k,   m_k ← γ m_k + (1 − γ) Σ_{i: k(i)=k} z_e(i),
    Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j,   e_k = m_k / Ñ_k,

or, as an option, as parameters trained by the codebook term. Codes are assigned with the codebook as it
was before the step's update (so the commitment sees the codes the decoder saw). The first training
batch sets every code to one of its encoder outputs (data initialisation). A code whose EMA count
falls below `dead_threshold` times the fair share Σ_j N_j / K is restarted at an encoder output of the
current batch (chosen by the caller's generator), with the fair share as its count. Under
torch.distributed the counts and sums are all-reduced and restarts are drawn from the gathered batch, so
every rank holds the same codebook. All codebook state is in buffers (saved with the model and resumed).

Encoder: a 3×3 stem, stride-2 4×4 convolutions while the side halves to at least G, a valid convolution
to exactly G×G when the side does not halve onto it (28 → 14 → 7 → 4), two residual blocks (ReLU, 3×3,
ReLU, 1×1) and a 1×1 convolution to D channels. The decoder mirrors it, ending in a sigmoid.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvVQVAE", "VectorQuantizer", "grid_plan"]


def grid_plan(side: int, grid: int) -> tuple[int, int]:
    """(stride-2 halvings, kernel of the final valid convolution, 1 if none) taking `side` to `grid`."""
    if not 1 <= grid <= side // 2:
        raise ValueError(f"a {grid}×{grid} code grid does not fit a {side}×{side} image (at most {side // 2})")
    halvings = 0
    while side % 2 == 0 and side // 2 >= grid and halvings < 4:
        side //= 2
        halvings += 1
    if halvings == 0:
        raise ValueError(f"a {side}×{side} image cannot be halved onto a {grid}×{grid} grid")
    return halvings, side - grid + 1


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // 4)
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class VectorQuantizer(nn.Module):
    """K codes of D numbers. forward(z_e (B, D, G, G), generator) -> dict with z_q (straight-through),
    codes (B, G, G), commit (B,), codebook (B,) (zeros with EMA updates) and perplexity of the batch."""

    def __init__(self, num_codes: int, code_dim: int, *, ema: bool = True, decay: float = 0.99,
                 epsilon: float = 1e-5, dead_threshold: float = 0.5) -> None:
        super().__init__()
        self.num_codes, self.code_dim, self.ema = int(num_codes), int(code_dim), bool(ema)
        self.decay, self.epsilon, self.dead_threshold = float(decay), float(epsilon), float(dead_threshold)
        init = torch.randn(self.num_codes, self.code_dim)
        if self.ema:
            self.register_buffer("codebook", init)
        else:
            self.codebook = nn.Parameter(init.uniform_(-1 / self.num_codes, 1 / self.num_codes))
        self.register_buffer("ema_count", torch.ones(self.num_codes))
        self.register_buffer("ema_sum", init.detach().clone())
        # 0 until the first training batch has set the codes to encoder outputs (a random initialisation
        # far from where the encoder's outputs lie leaves all but one code unused).
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    def assign(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of `flat` (N, D): argmin ‖z‖² − 2 z·e + ‖e‖²."""
        codebook = self.codebook.detach().float()
        distance = (flat.square().sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.square().sum(1)[None])
        return distance.argmin(dim=1)

    def forward(self, z_e: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        z_e = z_e.float()
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B·G·G, D), image-major
        if self.training and not bool(self.initialized):
            self._initialise(flat.detach(), h * w, generator)
        codes = self.assign(flat.detach())
        z_q_flat = self.codebook[codes].float()  # a copy: the in-place update below leaves it alone
        z_q = z_q_flat.view(b, h, w, d).permute(0, 3, 1, 2)
        commit = (z_e - z_q.detach()).square().flatten(1).sum(1)
        codebook_term = ((z_e.detach() - z_q).square().flatten(1).sum(1) if not self.ema
                         else torch.zeros(b, device=z_e.device))
        one_hot = F.one_hot(codes, self.num_codes).float()
        counts = one_hot.sum(0)
        if self.training:
            self._update(flat.detach(), one_hot, counts, h * w, generator)
        probs = counts / counts.sum().clamp_min(1.0)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-12))).sum())
        return {"z_q": z_e + (z_q - z_e).detach(), "codes": codes.view(b, h, w), "commit": commit,
                "codebook": codebook_term, "perplexity": perplexity, "counts": counts}

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, one_hot: torch.Tensor, counts: torch.Tensor, per_image: int,
                generator: torch.Generator | None) -> None:
        counts = counts.clone()
        sums = one_hot.T @ flat
        if _distributed():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.ema_count.sum()
            smoothed = (self.ema_count + self.epsilon) / (total + self.num_codes * self.epsilon) * total
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self._restart_dead(flat, per_image, generator)

    @torch.no_grad()
    def _initialise(self, flat: torch.Tensor, per_image: int, generator: torch.Generator | None) -> None:
        """Every code set to an encoder output of the (gathered) first batch, each with the fair share of
        that batch's vectors as its count."""
        pool = _gathered(flat, per_image)
        pick = torch.randint(pool.shape[0], (self.num_codes,), generator=generator, device=pool.device)
        fair = pool.shape[0] / self.num_codes
        self.codebook.data.copy_(pool[pick])
        self.ema_count.fill_(fair)
        self.ema_sum.copy_(pool[pick] * fair)
        self.initialized.fill_(1)

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor, per_image: int, generator: torch.Generator | None) -> None:
        fair = self.ema_count.sum() / self.num_codes
        dead = torch.nonzero(self.ema_count < self.dead_threshold * fair).flatten()
        if dead.numel() == 0:  # the same on every rank: the counts were all-reduced
            return
        pool = _gathered(flat, per_image)
        pick = torch.randint(pool.shape[0], (dead.numel(),), generator=generator, device=pool.device)
        fresh = pool[pick].to(self.codebook.dtype)
        self.codebook.data[dead] = fresh
        self.ema_count[dead] = fair
        self.ema_sum[dead] = fresh * fair

    def usage(self, codes: torch.Tensor) -> tuple[int, float]:
        """(codes used, perplexity exp(H)) of a set of assignments."""
        counts = torch.bincount(codes.flatten(), minlength=self.num_codes).float()
        return used_and_perplexity(counts)


def used_and_perplexity(counts: torch.Tensor) -> tuple[int, float]:
    """From per-code counts: how many codes were used, and the perplexity exp(−Σ p log p) of their use."""
    total = float(counts.sum())
    if total <= 0:
        return 0, 0.0
    p = counts.double() / total
    entropy = -float((p[p > 0] * p[p > 0].log()).sum())
    return int((counts > 0).sum()), math.exp(entropy)


def _gathered(flat: torch.Tensor, per_image: int) -> torch.Tensor:
    """The rows of every rank's `flat` (`per_image` rows an image), in the global batch's order: rank r
    holds the global batch's images r, r + world, r + 2·world, ... (the engine's sharding)."""
    if not _distributed():
        return flat
    world = torch.distributed.get_world_size()
    images = torch.tensor([flat.shape[0] // per_image], device=flat.device)
    counts = [torch.zeros_like(images) for _ in range(world)]
    torch.distributed.all_gather(counts, images)
    sizes = [int(c) for c in counts]
    top = max(sizes)
    padded = torch.zeros(top, per_image, flat.shape[1], device=flat.device, dtype=flat.dtype)
    padded[: sizes[torch.distributed.get_rank()]] = flat.view(-1, per_image, flat.shape[1])
    parts = [torch.zeros_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    order = [parts[g % world][g // world] for g in range(sum(sizes))]  # image g sits on rank g % world
    return torch.cat(order) if order else flat[:0]


class ConvVQVAE(nn.Module):
    """image_shape (C, S, S); a G×G grid of D-dimensional codes from a codebook of K; `width` channels."""

    def __init__(self, image_shape: tuple[int, int, int] | list[int], grid: int, code_dim: int,
                 num_codes: int = 512, width: int = 32, *, ema: bool = True, decay: float = 0.99,
                 dead_threshold: float = 0.5) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if h != w:
            raise ValueError(f"the VQ-VAE takes square images; got {h}×{w}")
        self.image_shape, self.grid, self.code_dim = (c, h, w), int(grid), int(code_dim)
        halvings, kernel = grid_plan(h, self.grid)
        chans = [width * 2 ** min(i, 1) for i in range(halvings + 1)]  # width, then twice it below full size
        enc: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1)]
        for i in range(halvings):
            enc += [nn.ReLU(), nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1)]
        top = chans[-1]
        if kernel > 1:
            enc += [nn.ReLU(), nn.Conv2d(top, top, kernel)]
        enc += [_Residual(top), _Residual(top), nn.ReLU(), nn.Conv2d(top, self.code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = VectorQuantizer(num_codes, self.code_dim, ema=ema, decay=decay,
                                         dead_threshold=dead_threshold)
        dec: list[nn.Module] = [nn.Conv2d(self.code_dim, top, 3, padding=1), _Residual(top), _Residual(top)]
        if kernel > 1:
            dec += [nn.ReLU(), nn.ConvTranspose2d(top, top, kernel)]
        for i in reversed(range(halvings)):
            dec += [nn.ReLU(), nn.ConvTranspose2d(chans[i + 1], chans[i], 4, stride=2, padding=1)]
        dec += [nn.ReLU(), nn.Conv2d(width, c, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_dim(self) -> int:
        """Numbers in z_e (and z_q): G·G·D, the size comparable with a VAE's latent."""
        return self.grid * self.grid * self.code_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, S, S) in [0, 1] -> z_e (B, D, G, G)."""
        return self.encoder(x)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q (B, D, G, G) -> x̂ (B, C, S, S) in [0, 1]."""
        return torch.sigmoid(self.decoder(z_q))

    def quantize(self, z_e: torch.Tensor) -> torch.Tensor:
        """The nearest codes of z_e (B, D, G, G), as z_q of the same shape (no update, no gradient)."""
        b, d, h, w = z_e.shape
        codes = self.quantizer.assign(z_e.float().permute(0, 2, 3, 1).reshape(-1, d))
        return self.quantizer.codebook.detach()[codes].float().view(b, h, w, d).permute(0, 3, 1, 2)
