"""The class-penalised autoencoder (a KMNIST study of class-separating penalties): a stacked MLP
autoencoder whose latents are pulled towards a fixed target point per class.

    z = encoder(x);  x̂ = decoder(z)
    recon_i   = mean_pixels ρ(x_i − x̂_i)          (ρ = MSE in the study; any loss of the registry)
    penalty_i = ‖z_i − t_{y_i}‖₂                   (the class targets of models/class_ae.py)
    loss      = mean_i (recon_i + λ · penalty_i)

The reconstruction is a mean over pixels here (not a sum, as in the other families) so that λ means what it
meant in the study (its MSE was a mean): the useful λ then lies around 0.001–10. λ = 0 is the
unsupervised autoencoder; λ > 0 uses the labels, so a probe of its latents is not an unsupervised
measure, and every label of such a run says so. RAdam (Liu et al. 2019, arXiv 1908.03265) is this
family's default optimiser, as in the study.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.families.base import Batch, Family, Objective, OnStep, Term, batches, objective_device, to_unit
from core.families.recon import ALPHA_TERM, build_loss, schedule_terms, scheduled
from core.fields import ConfigError, Field
from models.class_ae import TARGETS, MLPAutoencoder, class_targets, penalty

__all__ = ["ClassPenaltyAE", "ClassPenaltyObjective", "hidden_sizes"]

TARGET_TITLES = (("one_hot", "one-hot"), ("simplex", "simplex"), ("orthogonal", "orthogonal"))


def hidden_sizes(text: str) -> tuple[int, ...]:
    """"800x200" (or "800,200") -> (800, 200); ValueError for anything else."""
    try:
        sizes = tuple(int(v) for v in str(text).replace(",", "x").split("x") if v.strip())
    except ValueError:
        raise ValueError(f"must be whole numbers joined by x, e.g. 800x200; got {text!r}") from None
    if not sizes or min(sizes) < 1 or max(sizes) > 65536:
        raise ValueError(f"must be 1 to 65,536 each, e.g. 800x200; got {text!r}")
    return sizes


def _recon(loss: nn.Module, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """mean over each example's pixels of ρ(x − x̂), float32, (B,)."""
    return loss((x - x_hat.float()).flatten(1)).mean(dim=1)


class ClassPenaltyObjective(Objective):
    """The autoencoder, its reconstruction loss and its class targets (a buffer: saved with the weights)."""

    def __init__(self, model: MLPAutoencoder, loss: nn.Module, targets: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.register_buffer("targets", targets)
        self.image_shape = model.image_shape

    def forward(self, batch: Batch) -> dict[str, dict[str, torch.Tensor]]:
        x = to_unit(batch.images)
        z = self.model.encode(x)
        x_hat = self.model.decode(z)
        terms = {"recon": _recon(self.loss, x, x_hat), "penalty": penalty(z, self.targets, batch.labels)}
        terms.update(schedule_terms(self.loss, x))
        return {"terms": terms, "counts": {}}


class ClassPenaltyAE(Family):
    name = "class_ae"
    title = "Class-penalty AE"
    summary = ("MLP autoencoder whose latents are pulled to a target point per class (λ·‖z − t_y‖): uses the "
               "labels when λ > 0.")
    model_kind = "mlp_ae"
    id_tag = "cae"
    default_optimizer = "radam"
    fields = (
        Field("latent_dim", "int", 10, "Bottleneck size", lo=1, hi=4096,
              help="the latent size b (the study used 10, and 145)"),
        Field("hidden_layers", "str", "800x200", "Hidden layers", advanced=True,
              help="the encoder's hidden sizes, mirrored in the decoder (the study's 800x200)"),
        Field("class_lambda", "float", 0.25, "Class penalty λ", lo=0.0, hi=1e4,
              help="loss = recon + λ·‖z − t_y‖; 0 is the unsupervised autoencoder, > 0 uses the labels"),
        Field("targets", "choice", "one_hot", "Class targets", choices=TARGETS,
              titles=TARGET_TITLES,
              help="one_hot: rows of the identity (the study's; zero-padded past the classes); simplex or "
                   "orthogonal: well separated and using every dimension"),
        Field("target_radius", "float", 1.0, "Target radius", lo=0.0, strict_lo=True, hi=1e4, advanced=True,
              help="the targets' distance from the origin"),
    )
    terms = (Term("recon", "reconstruction (mean over pixels)"), Term("penalty", "distance to the class target"),
             ALPHA_TERM)

    def active_terms(self, config: dict) -> tuple[Term, ...]:
        return self.terms if scheduled(config) else self.terms[:2]

    def validate(self, config: dict, image_shape: tuple[int, int, int]) -> None:
        try:
            hidden_sizes(config["hidden_layers"])
        except ValueError as exc:
            raise ConfigError(f"hidden_layers {exc}", "hidden_layers") from None
        from core.datasets import dataset_info

        classes = dataset_info(config["dataset"]).num_classes
        if int(config["latent_dim"]) < classes:
            raise ConfigError(f"latent_dim must be at least {classes} (one target per class of {config['dataset']}), "
                              f"got {config['latent_dim']}", "latent_dim")

    def model_spec(self, config: dict, image_shape: tuple[int, int, int]) -> dict:
        from core.datasets import dataset_info

        return {"kind": self.model_kind, "image_shape": list(image_shape), "latent_dim": config["latent_dim"],
                "hidden": list(hidden_sizes(config["hidden_layers"])), "targets": config["targets"],
                "target_radius": config["target_radius"], "classes": dataset_info(config["dataset"]).num_classes}

    def describe(self, config: dict, latent: bool = True) -> str:
        lam = float(config.get("class_lambda", 0.0))
        size = f"b={config['latent_dim']}, " if latent else ""
        if lam == 0:
            return f"Autoencoder ({size}λ=0: unsupervised)"
        targets = dict(TARGET_TITLES).get(config.get("targets"), config.get("targets"))
        return f"Class-penalty AE ({size}λ={lam:g}, {targets} targets, uses labels)"

    def build(self, config: dict) -> ClassPenaltyObjective:
        spec = config["model"]
        shape = tuple(spec["image_shape"])
        model = MLPAutoencoder(shape, spec["hidden"], int(spec["latent_dim"]))
        targets = class_targets(spec["targets"], int(spec["classes"]), int(spec["latent_dim"]),
                                float(spec["target_radius"]))
        return ClassPenaltyObjective(model, build_loss(config, shape[0] * shape[1] * shape[2]), targets)

    def loss_weights(self, config: dict) -> dict[str, float]:
        lam = float(config["class_lambda"])
        return {"recon": 1.0, "penalty": lam} if lam else {"recon": 1.0}  # λ = 0: the plain autoencoder

    def reference_points(self, config: dict) -> torch.Tensor:
        """The class targets t_c (classes, b): drawn with the latents on the Embeddings page."""
        spec = config["model"]
        return class_targets(spec["targets"], int(spec["classes"]), int(spec["latent_dim"]),
                             float(spec["target_radius"]))

    def study_section(self, runs: list, log: Any) -> str | None:
        """The λ sweep: each run's classifier scored on validation and test, λ chosen on validation, the
        raw-pixel baselines (core.class_penalty)."""
        from core.class_penalty import evaluate_run, pixel_baselines, report_section

        finished = [r for r in runs if r.status().get("state") == "finished"]
        if not finished:
            return None
        scores = []
        for run in finished:
            scores.append(evaluate_run(run))
            log(f"{run.run_id}: class-penalty classifier: validation {scores[-1]['val_accuracy']:.3f}, test "
                f"{scores[-1]['test_accuracy']:.3f}")
        baselines = pixel_baselines(finished[0].config["dataset"])
        return report_section(scores, baselines)

    @torch.no_grad()
    def evaluate(self, objective: ClassPenaltyObjective, images: torch.Tensor, config: dict, *,
                 batch_size: int = 1024, progress: OnStep | None = None) -> dict[str, Any]:
        device = objective_device(objective)
        was_training = objective.training
        objective.eval()
        recon, mse, n = 0.0, 0.0, max(1, images.shape[0])
        for chunk in batches(images, batch_size, progress):
            x = to_unit(chunk.to(device))
            x_hat = objective.model.decode(objective.model.encode(x))
            recon += _recon(objective.loss, x, x_hat).sum().item()
            mse += (x - x_hat).square().flatten(1).mean(dim=1).sum().item()
        objective.train(was_training)
        out: dict[str, Any] = {"val_recon": recon / n, "val_mse": mse / n}
        out["val_loss"] = out["val_recon"]
        loss = objective.loss
        if callable(getattr(loss, "alpha", None)) and callable(getattr(loss, "scale", None)):
            out["alpha_mean"] = float(loss.alpha().mean().item())
            out["scale_mean"] = float(loss.scale().mean().item())
        return out

    @torch.no_grad()
    def embed(self, objective: ClassPenaltyObjective, images: torch.Tensor, *, batch_size: int = 1024,
              progress: OnStep | None = None) -> dict[str, torch.Tensor]:
        device = objective_device(objective)
        parts = [objective.model.encode(to_unit(chunk.to(device))).float().cpu()
                 for chunk in batches(images, batch_size, progress)]
        return {"z": torch.cat(parts) if parts else torch.zeros(0, objective.model.latent_dim)}

    @torch.no_grad()
    def decode(self, objective: ClassPenaltyObjective, z: torch.Tensor) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float32)
        z = z[None] if z.ndim == 1 else z
        x = objective.model.decode(z.to(objective_device(objective))).float().cpu()
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    def reconstruct(self, objective: ClassPenaltyObjective, images: torch.Tensor) -> torch.Tensor:
        return self.decode(objective, self.embed(objective, images)["z"])
