"""The VAE (Kingma & Welling 2013, arXiv 1312.6114) with a robust reconstruction loss.

For uint8 images, x = images / 255 (pixels in [0, 1]), ε ~ N(0, I) drawn per step from the run's seed:

    μ, log σ² = encoder(x);   z = μ + exp(½ log σ²) ε;   x̂ = decoder(z)
    recon_i = Σ_pixels ρ(x_i − x̂_i)                 (ρ: the run's reconstruction loss, core.families.recon)
    kl_i    = ½ Σ_latent (μ² + σ² − log σ² − 1)
    loss    = mean_i (recon_i + β · kl_i)

Validation (z = μ, deterministic): val_recon, val_kl, val_loss = val_recon + β·val_kl, the active units
(#{j : Var_x μ_j > 0.01}: a posterior that collapsed has few) and, for the adaptive loss, the mean
learned α and c. The representation probed and projected is μ ("z"); log σ² rides along, so a probe
can draw z = μ + σε as the user's first study did. On CUDA the network runs under bf16 autocast (ρ and
the KL in float32) with channels_last tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.families.base import (
    Batch,
    Family,
    LoopProgress,
    Objective,
    Representation,
    Term,
    batches,
    objective_device,
    to_unit,
)
from core.families.recon import build_loss, reconstruction_cost
from core.fields import Field
from models.vae import ConvVAE, kl_divergence

__all__ = ["ACTIVE_UNIT_THRESHOLD", "VAE", "VAEObjective"]

ACTIVE_UNIT_THRESHOLD = 0.01  # a latent unit is active when Var_x[μ(x)] exceeds this


class VAEObjective(Objective):
    """The VAE and its reconstruction loss; forward(batch) -> per-example recon and KL (float32)."""

    def __init__(self, model: ConvVAE, loss: nn.Module, *, amp: bool = False, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.amp = amp
        self.channels_last = channels_last
        self.image_shape = model.image_shape

    def forward(self, batch: Batch) -> dict[str, dict[str, torch.Tensor]]:
        x = to_unit(batch.images, self.channels_last)
        eps = batch.normal(self.model.latent_dim)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            x_hat, mu, logvar = self.model(x, eps)
        return {"terms": {"recon": reconstruction_cost(self.loss, x, x_hat), "kl": kl_divergence(mu, logvar)},
                "counts": {}}


class VAE(Family):
    name = "vae"
    title = "VAE"
    summary = "Variational autoencoder: a Gaussian posterior, a KL to N(0, I), a robust reconstruction loss."
    model_kind = "conv_vae"
    fields = (
        Field("latent_dim", "int", 16, "Latent size", lo=1, hi=4096, help="the size of z (μ and log σ² each)"),
        Field("beta", "float", 1.0, "KL weight β", lo=0.0, hi=1e6, help="loss = recon + β·KL"),
        Field("width", "int", 32, "Network width", lo=1, hi=1024, advanced=True,
              help="the first convolution's channels (doubling at each halving)"),
    )
    terms = (Term("recon", "reconstruction"), Term("kl", "KL"))
    representations = (Representation("z", "μ"),)
    required_embeddings = ("z", "logvar")

    def model_spec(self, config: dict, image_shape: tuple[int, int, int]) -> dict:
        return {"kind": self.model_kind, "image_shape": list(image_shape), "latent_dim": config["latent_dim"],
                "width": config["width"]}

    def embedding_shapes(self, config: dict) -> dict[str, tuple[tuple[int, ...], str]]:
        d = int(config["latent_dim"])
        return {"z": ((d,), "float"), "logvar": ((d,), "float")}

    def build(self, config: dict) -> VAEObjective:
        spec = config["model"]
        shape = tuple(spec["image_shape"])
        model = ConvVAE(shape, int(spec["latent_dim"]), int(spec.get("width", 32)))
        return VAEObjective(model, build_loss(config, shape[0] * shape[1] * shape[2]))

    def loss_weights(self, config: dict) -> dict[str, float]:
        return {"recon": 1.0, "kl": float(config["beta"])}

    @torch.no_grad()
    def evaluate(self, objective: VAEObjective, images: torch.Tensor, config: dict, *,
                 batch_size: int = 1024, progress: LoopProgress | None = None) -> dict[str, Any]:
        model, loss = objective.model, objective.loss
        device = objective_device(objective)
        was_training = objective.training
        objective.eval()
        recon_sum, kl_sum, mus = 0.0, 0.0, []
        for chunk in batches(images, batch_size, progress):
            x = to_unit(chunk.to(device), objective.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=objective.amp):
                mu, logvar = model.encode(x)
                x_hat = model.decode(mu)
            recon_sum += reconstruction_cost(loss, x, x_hat).sum().item()
            kl_sum += kl_divergence(mu, logvar).sum().item()
            mus.append(mu.float())
        objective.train(was_training)
        n = max(1, images.shape[0])
        mu_all = torch.cat(mus)
        variance = mu_all.var(dim=0) if mu_all.shape[0] > 1 else torch.zeros(mu_all.shape[1], device=mu_all.device)
        out: dict[str, Any] = {
            "val_recon": recon_sum / n,
            "val_kl": kl_sum / n,
            "active_units": int((variance > ACTIVE_UNIT_THRESHOLD).sum().item()),
            "alpha_mean": None,
            "scale_mean": None,
        }
        out["val_loss"] = out["val_recon"] + float(config["beta"]) * out["val_kl"]
        if callable(getattr(loss, "alpha", None)) and callable(getattr(loss, "scale", None)):
            out["alpha_mean"] = float(loss.alpha().mean().item())
            out["scale_mean"] = float(loss.scale().mean().item())
        return out

    def health(self, record: dict, config: dict) -> str | None:
        active = record.get("active_units")
        if isinstance(active, int) and active == 0:
            return ("no latent unit is active (the posterior collapsed onto the prior): lower β or use a "
                    "reconstruction loss that is not bounded")
        return None

    @torch.no_grad()
    def embed(self, objective: VAEObjective, images: torch.Tensor, *, batch_size: int = 1024,
              progress: LoopProgress | None = None) -> dict[str, torch.Tensor]:
        model = objective.model
        device = objective_device(objective)
        amp = device.type == "cuda"
        was_training = model.training
        model.eval()
        mus, logvars = [], []
        for chunk in batches(images, batch_size, progress):
            x = to_unit(chunk.to(device), amp)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                mu, logvar = model.encode(x)
            mus.append(mu.float().cpu())
            logvars.append(logvar.float().cpu())
        model.train(was_training)
        d = model.latent_dim
        return {"z": torch.cat(mus) if mus else torch.zeros(0, d),
                "logvar": torch.cat(logvars) if logvars else torch.zeros(0, d)}

    @torch.no_grad()
    def decode(self, objective: VAEObjective, z: torch.Tensor) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float32)
        z = z[None] if z.ndim == 1 else z
        x = objective.model.decode(z.to(objective_device(objective))).float().cpu()
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    def reconstruct(self, objective: VAEObjective, images: torch.Tensor) -> torch.Tensor:
        return self.decode(objective, self.embed(objective, images)["z"])

    @torch.no_grad()
    def sample(self, objective: VAEObjective, n: int, seed: int = 0) -> torch.Tensor:
        z = torch.randn(n, objective.model.latent_dim, generator=torch.Generator().manual_seed(seed))
        return self.decode(objective, z)
