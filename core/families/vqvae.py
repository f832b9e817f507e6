"""The VQ-VAE (van den Oord et al. 2017, arXiv 1711.00937) with a robust reconstruction loss.

    z_e = encoder(x) (G×G vectors of D);  z_q = nearest codes;  x̂ = decoder(z_q)   (models/vqvae.py)
    recon_i  = Σ_pixels ρ(x_i − x̂_i)       commit_i = Σ ‖z_e − sg[z_q]‖²     (codebook_i = Σ ‖sg[z_e] − z_q‖²)
    loss     = mean_i (recon_i + β_commit · commit_i [+ codebook_i without EMA updates])

Latent size. A VQ-VAE's z_e is a G×G grid of D numbers; its "latent size" here is G·G·D, the number of
floats in z_e, so that it compares with a VAE's d (`latent_dim` sets it; `grid` G, by default the
largest grid that leaves D ≥ 4, fixes D = latent_dim / G²). The information it can pass is G²·log2 K
bits, which the reports give beside it. Probes and projections use the flattened z_e by default, z_q as
an option; every table says which.

Logged: per step recon, commit (and codebook), the batch's code perplexity; per epoch the codes used over
the epoch and their perplexity, and on the validation set the same with val_recon, val_commit, val_loss.
A run whose code usage collapses (under 5 % of the codebook, or two codes) says so in its status.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from core.families.base import (
    Batch,
    Family,
    Objective,
    OnStep,
    Representation,
    Term,
    batches,
    encode_batches,
    objective_device,
    to_unit,
)
from core.families.recon import ALPHA_TERM, build_loss, reconstruction_cost, schedule_terms, scheduled
from core.fields import ConfigError, Field
from models.vqvae import ConvVQVAE, used_and_perplexity

__all__ = ["VQVAE", "VQVAEObjective", "auto_grid"]

COLLAPSE_FRACTION = 0.05
RESTART_STREAM = 3  # the Batch generator stream that draws dead-code restarts


def auto_grid(latent_dim: int, side: int) -> int | None:
    """The default grid G for a latent size on side×side images: the largest G ≤ side/2 with G² dividing
    latent_dim and D = latent_dim/G² ≥ 4, else the largest with G² dividing it; None if none does."""
    fits = [g for g in range(side // 2, 0, -1) if latent_dim % (g * g) == 0]
    roomy = [g for g in fits if latent_dim // (g * g) >= 4]
    return (roomy or fits or [None])[0]


class VQVAEObjective(Objective):
    """The VQ-VAE and its reconstruction loss; forward(batch) -> recon, commit, codebook, perplexity."""

    def __init__(self, model: ConvVQVAE, loss: nn.Module, *, amp: bool = False, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.amp = amp
        self.channels_last = channels_last
        self.image_shape = model.image_shape

    def forward(self, batch: Batch) -> dict[str, dict[str, torch.Tensor]]:
        x = to_unit(batch.images, self.channels_last)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            z_e = self.model.encode(x)
        q = self.model.quantizer(z_e, batch.generator(RESTART_STREAM))  # float32, outside autocast
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            x_hat = self.model.decode(q["z_q"])
        terms = {"recon": reconstruction_cost(self.loss, x, x_hat), "commit": q["commit"],
                 "perplexity": q["perplexity"]}
        if not self.model.quantizer.ema:
            terms["codebook"] = q["codebook"]
        terms.update(schedule_terms(self.loss, x))
        return {"terms": terms, "counts": {"codes": q["counts"]}}


class VQVAE(Family):
    name = "vqvae"
    title = "VQ-VAE"
    summary = "Vector-quantised autoencoder: a grid of codes from a learned codebook, a robust reconstruction loss."
    model_kind = "conv_vqvae"
    id_tag = "vqvae"
    fields = (
        Field("latent_dim", "int", 16, "Latent size (grid² × code size)", lo=1, hi=65536,
              help="floats in z_e, comparable with a VAE's latent size: a G×G grid of codes of D numbers each"),
        Field("grid", "int", None, "Code grid side G", optional=True, lo=1, hi=64,
              help="empty: the largest grid that leaves codes of at least 4 numbers"),
        Field("codebook_size", "int", 512, "Codebook size K", lo=2, hi=65536),
        Field("commitment", "float", 0.25, "Commitment weight β", lo=0.0, hi=1e3,
              help="loss = recon + β·‖z_e − sg[z_q]‖² (the paper's 0.25)"),
        Field("codebook_update", "choice", "ema", "Codebook update", choices=("ema", "loss"), advanced=True,
              titles=(("ema", "moving averages (EMA)"), ("loss", "codebook loss term")),
              help="ema: moving averages of the assigned vectors (decay below); loss: the codebook term"),
        Field("ema_decay", "float", 0.99, "EMA decay γ", lo=0.0, hi=1.0, strict_lo=True, advanced=True),
        Field("dead_code_threshold", "float", 0.5, "Dead-code threshold", lo=0.0, hi=1.0, advanced=True,
              help="codes used less than this fraction of their fair share are restarted at encoder outputs"),
        Field("width", "int", 32, "Network width", lo=1, hi=1024, advanced=True),
    )
    terms = (Term("recon", "reconstruction"), Term("commit", "commitment"), Term("codebook", "codebook"),
             Term("perplexity", "code perplexity (batch)", per_example=False, lower_is_better=False), ALPHA_TERM)
    representations = (Representation("z", "z_e (before quantisation)"), Representation("z_q", "z_q (quantised)"))

    def complete(self, config: dict, image_shape: tuple[int, int, int]) -> None:
        if config.get("grid") is None:
            config["grid"] = auto_grid(int(config["latent_dim"]), int(image_shape[1]))

    def validate(self, config: dict, image_shape: tuple[int, int, int]) -> None:
        _, h, w = image_shape
        if h != w:
            raise ConfigError(f"dataset images are {h}×{w}; the VQ-VAE takes square images", "dataset")
        grid, latent = config.get("grid"), int(config["latent_dim"])
        if grid is None:
            raise ConfigError(f"latent_dim {latent} is not a grid of codes on {h}×{w} images (G²·D with G ≤ "
                              f"{h // 2}); pick a multiple of a square, e.g. {4 * 4 * 4}", "latent_dim")
        if grid > h // 2:
            raise ConfigError(f"grid must be at most {h // 2} on {h}×{w} images, got {grid}", "grid")
        if latent % (grid * grid):
            raise ConfigError(f"latent_dim {latent} is not a multiple of grid² = {grid * grid} (latent size = "
                              f"grid² × code size)", "latent_dim")

    def model_spec(self, config: dict, image_shape: tuple[int, int, int]) -> dict:
        grid = int(config["grid"])
        return {"kind": self.model_kind, "image_shape": list(image_shape), "latent_dim": config["latent_dim"],
                "grid": grid, "code_dim": int(config["latent_dim"]) // (grid * grid),
                "codebook_size": config["codebook_size"], "width": config["width"],
                "codebook_update": config["codebook_update"], "ema_decay": config["ema_decay"],
                "dead_code_threshold": config["dead_code_threshold"]}

    def describe(self, config: dict, latent: bool = True) -> str:
        grid = config.get("grid")
        if not grid:
            return self.title
        if not latent:  # the code size d and the bits follow from the latent size
            return f"VQ-VAE (K={config['codebook_size']}, {grid}×{grid} grid)"
        d = int(config["latent_dim"]) // (grid * grid)
        bits = grid * grid * math.log2(int(config["codebook_size"]))
        return f"VQ-VAE (K={config['codebook_size']}, {grid}×{grid}×{d}, {bits:g} bits)"

    def embedding_shapes(self, config: dict) -> dict[str, tuple[tuple[int, ...], str]]:
        d, grid = int(config["latent_dim"]), int(config["grid"])
        return {"z": ((d,), "float"), "z_q": ((d,), "float"), "codes": ((grid * grid,), "int")}

    def build(self, config: dict) -> VQVAEObjective:
        s = config["model"]
        shape = tuple(s["image_shape"])
        model = ConvVQVAE(shape, int(s["grid"]), int(s["code_dim"]), int(s["codebook_size"]), int(s["width"]),
                          ema=s["codebook_update"] == "ema", decay=float(s["ema_decay"]),
                          dead_threshold=float(s["dead_code_threshold"]))
        return VQVAEObjective(model, build_loss(config, shape[0] * shape[1] * shape[2]))

    def active_terms(self, config: dict) -> tuple[Term, ...]:
        """The codebook term exists only when the codebook is trained by it (not by moving averages)."""
        ema = config.get("codebook_update", "ema") == "ema"
        return tuple(t for t in self.terms if not (ema and t.name == "codebook")
                     and (t is not ALPHA_TERM or scheduled(config)))

    def loss_weights(self, config: dict) -> dict[str, float]:
        weights = {"recon": 1.0, "commit": float(config["commitment"])}
        if config.get("codebook_update") == "loss":
            weights["codebook"] = 1.0
        return weights

    @torch.no_grad()
    def evaluate(self, objective: VQVAEObjective, images: torch.Tensor, config: dict, *,
                 batch_size: int = 1024, progress: OnStep | None = None) -> dict[str, Any]:
        model, loss = objective.model, objective.loss
        device = objective_device(objective)
        was_training = objective.training
        objective.eval()
        recon_sum, commit_sum, codes = 0.0, 0.0, []
        for chunk in batches(images, batch_size, progress):
            x = to_unit(chunk.to(device), objective.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=objective.amp):
                z_e = model.encode(x)
            q = model.quantizer(z_e)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=objective.amp):
                x_hat = model.decode(q["z_q"])
            recon_sum += reconstruction_cost(loss, x, x_hat).sum().item()
            commit_sum += q["commit"].sum().item()
            codes.append(q["codes"].flatten())
        objective.train(was_training)
        n = max(1, images.shape[0])
        used, perplexity = model.quantizer.usage(torch.cat(codes)) if codes else (0, 0.0)
        out: dict[str, Any] = {"val_recon": recon_sum / n, "val_commit": commit_sum / n, "val_codes_used": used,
                               "val_perplexity": perplexity, "alpha_mean": None, "scale_mean": None}
        out["val_loss"] = out["val_recon"] + float(config["commitment"]) * out["val_commit"]
        if callable(getattr(loss, "alpha", None)) and callable(getattr(loss, "scale", None)):
            out["alpha_mean"] = float(loss.alpha().mean().item())
            out["scale_mean"] = float(loss.scale().mean().item())
        return out

    def epoch_metrics(self, counts: dict[str, torch.Tensor], config: dict) -> dict[str, Any]:
        if "codes" not in counts:
            return {}
        used, perplexity = used_and_perplexity(counts["codes"].cpu())
        return {"codes_used": used, "perplexity_epoch": perplexity}

    def health(self, record: dict, config: dict) -> str | None:
        used, size = record.get("codes_used"), int(config["codebook_size"])
        if isinstance(used, int) and used < max(2, COLLAPSE_FRACTION * size):
            return (f"code usage collapsed: only {used} of {size} codes were used in epoch {record.get('epoch')}"
                    f" (dead codes are restarted; a lower learning rate or a smaller codebook may help)")
        return None

    @torch.no_grad()
    def embed(self, objective: VQVAEObjective, images: torch.Tensor, *, batch_size: int = 1024,
              progress: OnStep | None = None) -> dict[str, torch.Tensor]:
        model = objective.model

        def encode(x: torch.Tensor) -> dict[str, torch.Tensor]:
            z_e = model.encode(x).float()
            with torch.autocast(device_type=x.device.type, enabled=False):  # nearest codes in float32
                q = model.quantizer(z_e)
            return {"z": z_e.flatten(1), "z_q": q["z_q"].flatten(1), "codes": q["codes"].flatten(1)}

        d, g = model.latent_dim, model.grid * model.grid
        empty = {"z": torch.zeros(0, d), "z_q": torch.zeros(0, d), "codes": torch.zeros(0, g, dtype=torch.int64)}
        return encode_batches(objective, images, encode, empty, batch_size=batch_size, progress=progress)

    @torch.no_grad()
    def decode(self, objective: VQVAEObjective, z: torch.Tensor) -> torch.Tensor:
        """Stored z_e rows (m, G·G·D): quantised with the codebook, then decoded."""
        model = objective.model
        z = torch.as_tensor(z, dtype=torch.float32)
        z = z[None] if z.ndim == 1 else z
        grid = z.view(-1, model.code_dim, model.grid, model.grid).to(objective_device(objective))
        x = model.decode(model.quantize(grid)).float().cpu()
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    def reconstruct(self, objective: VQVAEObjective, images: torch.Tensor) -> torch.Tensor:
        return self.decode(objective, self.embed(objective, images)["z"])
