"""The VAE objective: the model and the reconstruction loss built from a run's config, and the per-example
terms of the loss.

For a batch of uint8 images, x = images / 255 (pixels in [0, 1]), and ε given by the caller:

    μ, log σ² = encoder(x);   z = μ + exp(½ log σ²) ε;   x̂ = decoder(z)
    recon_i = Σ_pixels ρ(x_i − x̂_i)                 (ρ = core.losses.make_loss(config["loss"], C·H·W))
    kl_i    = ½ Σ_latent (μ² + σ² − log σ² − 1)
    loss    = mean_i (recon_i + β · kl_i)

`VAEObjective` returns recon_i and kl_i (float32, shape (B,)); the training loop forms the loss (so that
data-parallel workers can weight their shards). The adaptive loss's α and c are parameters of
`VAEObjective.loss`, so they are trained and saved with the model. On CUDA the network runs under bf16
autocast (ρ and the KL in float32) with channels_last tensors.

Also: `encode(model, images)` -> μ, log σ² for a whole uint8 image set, in batches; `evaluate(...)` ->
the validation metrics logged each epoch (reconstruction at z = μ, KL, active units).
"""

from __future__ import annotations

import torch
from torch import nn

from models.vae import ConvVAE, kl_divergence

__all__ = ["ACTIVE_UNIT_THRESHOLD", "VAEObjective", "build_loss", "build_model", "encode", "evaluate"]

ACTIVE_UNIT_THRESHOLD = 0.01  # a latent unit is active when Var_x[μ(x)] exceeds this


def build_model(config: dict) -> ConvVAE:
    """The VAE a config describes (weights freshly initialised from torch's global generator)."""
    spec = config["model"]
    if spec.get("kind") != "conv_vae":
        raise ValueError(f"unknown model kind {spec.get('kind')!r}")
    return ConvVAE(spec["image_shape"], int(config["latent_dim"]), int(spec.get("width", 32)))


def build_loss(config: dict) -> nn.Module:
    """The per-element reconstruction loss a config names, for C·H·W dimensions."""
    from core.losses import make_loss

    c, h, w = config["model"]["image_shape"]
    return make_loss(config["loss"], c * h * w, alpha=config.get("loss_alpha"), scale=config.get("loss_scale"),
                     alpha_lo=config.get("adaptive_alpha_lo", 0.0), alpha_hi=config.get("adaptive_alpha_hi", 3.0))


def _to_unit(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class VAEObjective(nn.Module):
    """model + loss; forward(images uint8 (B,C,H,W), eps (B,d)) -> recon (B,), kl (B,) in float32."""

    def __init__(self, model: ConvVAE, loss: nn.Module, *, amp: bool = False, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.amp = amp  # bf16 autocast (CUDA)
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _to_unit(images, self.channels_last)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            x_hat, mu, logvar = self.model(x, eps)
        residual = (x - x_hat.float()).flatten(1)
        recon = self.loss(residual).sum(dim=1)
        return recon, kl_divergence(mu, logvar)


@torch.no_grad()
def encode(model: ConvVAE, images: torch.Tensor, *, batch_size: int = 1024, amp: bool | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """μ and log σ² (float32, on the CPU) of uint8 images (N, C, H, W), in batches, on the model's device."""
    device = next(model.parameters()).device
    amp = device.type == "cuda" if amp is None else amp
    was_training = model.training
    model.eval()
    mus, logvars = [], []
    for start in range(0, images.shape[0], batch_size):
        x = _to_unit(images[start : start + batch_size].to(device), device.type == "cuda")
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            mu, logvar = model.encode(x)
        mus.append(mu.float().cpu())
        logvars.append(logvar.float().cpu())
    model.train(was_training)
    d = model.latent_dim
    return (torch.cat(mus) if mus else torch.zeros(0, d)), (torch.cat(logvars) if logvars else torch.zeros(0, d))


@torch.no_grad()
def evaluate(objective: VAEObjective, images: torch.Tensor, beta: float, *, batch_size: int = 1024) -> dict:
    """Validation metrics with z = μ (deterministic):

    val_recon = mean_i Σ ρ(x_i − decoder(μ_i)),  val_kl = mean_i KL_i,  val_loss = val_recon + β·val_kl,
    active_units = #{j : Var_i μ_ij > 0.01}, and for the adaptive loss the mean learned α and c.
    """
    model, loss = objective.model, objective.loss
    device = next(model.parameters()).device
    was_training = objective.training
    objective.eval()
    recon_sum, kl_sum, mus = 0.0, 0.0, []
    for start in range(0, images.shape[0], batch_size):
        x = _to_unit(images[start : start + batch_size].to(device), objective.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=objective.amp):
            mu, logvar = model.encode(x)
            x_hat = model.decode(mu)
        recon_sum += loss((x - x_hat.float()).flatten(1)).sum().item()
        kl_sum += kl_divergence(mu, logvar).sum().item()
        mus.append(mu.float())
    objective.train(was_training)
    n = max(1, images.shape[0])
    mu_all = torch.cat(mus)
    variance = mu_all.var(dim=0) if mu_all.shape[0] > 1 else torch.zeros(mu_all.shape[1], device=mu_all.device)
    out = {
        "val_recon": recon_sum / n,
        "val_kl": kl_sum / n,
        "active_units": int((variance > ACTIVE_UNIT_THRESHOLD).sum().item()),
        "alpha_mean": None,
        "scale_mean": None,
    }
    out["val_loss"] = out["val_recon"] + beta * out["val_kl"]
    if callable(getattr(loss, "alpha", None)) and callable(getattr(loss, "scale", None)):
        out["alpha_mean"] = float(loss.alpha().mean().item())
        out["scale_mean"] = float(loss.scale().mean().item())
    return out
