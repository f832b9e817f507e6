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

Barron's experiment (2019, §VAE; core/barron.py runs its grid). Three fields move the reconstruction
term onto a representation and a distribution; their defaults (pixels, RGB, the run's reconstruction
loss) are the VAE above, computed by the same code:

    representation  T: pixels | dct | wavelet (core.representations: linear, |det J| = 1)
    colour          rgb | yuv (Barron's volume-preserving scaled YUV; colour images only)
    distribution    loss (the reconstruction loss, ρ summed over T's coefficients) | normal | cauchy |
                    students_t | general (core.losses.likelihoods: normalised, a scale (and ν or α)
                    learned per coefficient, c starting at 0.01, floor 1e-8)

    distortion_i = Σ_coefficients −log p(T(x_i) − T(x̂_i)) = Σ −log p(T(x_i − x̂_i))     (T is linear)
    ELBO_i       = −(distortion_i + kl_i) + log|det J_T|     (log|det J_T| = 0 for every map trained here)

With a normalised distortion (a `distribution`, or the adaptive loss) validation also reports the ELBO
on the held-out split: val_elbo in nats per image, from one z ~ q(z|x) per image drawn from a generator
seeded by the run's seed (the same draw at every epoch; the training's random streams are untouched),
val_bpd = −val_elbo / (C·H·W · ln 2) beside it, and val_distortion. These are continuous densities of
pixels in [0, 1], so they can be large positive numbers (a density above 1 per pixel); they are not the
discrete bits/dim of 8-bit images (those would add log 256 per dimension to a dequantised bound).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from core import datasets
from core.families.base import (
    Batch,
    Family,
    Objective,
    OnStep,
    Representation,
    Term,
    batches,
    encode_batches,
    mix_seed,
    objective_device,
    to_unit,
)
from core.families.recon import (
    ALPHA_TERM,
    build_loss,
    reconstruction_cost,
    schedule_terms,
    track_training_fraction,
)
from core.fields import ConfigError, Field
from core.losses.likelihoods import LIKELIHOODS, make_likelihood
from core.representations import COLOURS, REPRESENTATIONS, TITLES, make_representation
from models.vae import ConvVAE, kl_divergence

__all__ = ["ACTIVE_UNIT_THRESHOLD", "DISTRIBUTIONS", "VAE", "VAEObjective", "has_elbo"]

ACTIVE_UNIT_THRESHOLD = 0.01  # a latent unit is active when Var_x[μ(x)] exceeds this
DISTRIBUTIONS = ("loss", *LIKELIHOODS)  # "loss": the run's reconstruction loss
ELBO_STREAM = 7  # the random stream of the validation ELBO's z ~ q(z|x) (training uses others)


def _channels(config: dict) -> int | None:
    try:
        return datasets.dataset_info(str(config.get("dataset"))).image_shape[0]
    except ValueError:
        return None


def _colour_applies(config: dict) -> bool:
    return _channels(config) in (None, 3)


def has_elbo(config: dict) -> bool:
    """Whether a VAE run's distortion is a normalised NLL, so that its validation reports the ELBO."""
    distribution = config.get("distribution") or "loss"
    return distribution != "loss" or config.get("loss") == "adaptive"


class VAEObjective(Objective):
    """The VAE and its reconstruction loss; forward(batch) -> per-example recon and KL (float32).

    `representation` (core.representations) maps the residual before the loss when it is not the
    identity; `loss` is the reconstruction loss or a likelihood (core.losses.likelihoods)."""

    def __init__(self, model: ConvVAE, loss: nn.Module, *, representation: nn.Module | None = None,
                 amp: bool = False, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        if representation is not None and not representation.is_identity:
            self.representation = representation  # no state: model.safetensors is unchanged by it
        else:
            self.representation = None
        self.amp = amp
        self.channels_last = channels_last
        self.image_shape = model.image_shape
        self.log_abs_det = float(getattr(self.representation, "log_abs_det", 0.0))

    def distortion(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Σ over each example's coefficients of the loss of T(x) − T(x̂) = T(x − x̂), float32, (B,)."""
        if self.representation is None:
            return reconstruction_cost(self.loss, x, x_hat)
        return self.loss(self.representation(x - x_hat.float()).flatten(1)).sum(dim=1)

    def forward(self, batch: Batch) -> dict[str, dict[str, torch.Tensor]]:
        x = to_unit(batch.images, self.channels_last)
        eps = batch.normal(self.model.latent_dim)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            x_hat, mu, logvar = self.model(x, eps)
        terms = {"recon": self.distortion(x, x_hat), "kl": kl_divergence(mu, logvar)}
        terms.update(schedule_terms(self.loss, x))
        return {"terms": terms, "counts": {}}


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
        Field("representation", "choice", "pixels", "Representation", choices=REPRESENTATIONS,
              titles=tuple((r, TITLES[r]) for r in REPRESENTATIONS),
              help="where the reconstruction term is measured: pixels, the orthonormal 2-D DCT of the whole image, "
                   "or Barron's CDF 9/7 wavelet; each is linear with |det J| = 1, so ELBOs compare across them"),
        Field("colour", "choice", "rgb", "Colour space", choices=COLOURS, applies=_colour_applies,
              titles=tuple((c, TITLES[c]) for c in COLOURS),
              help="rgb, or Barron's volume-preserving scaled YUV (colour images only)"),
        Field("distribution", "choice", "loss", "Distribution", choices=DISTRIBUTIONS,
              titles=(("loss", "the reconstruction loss"), *((n, i.title) for n, i in LIKELIHOODS.items())),
              help="loss: the reconstruction loss above, summed over coefficients; normal, cauchy, students_t, "
                   "general: a normalised likelihood with a scale (and ν or α ∈ [0, 3]) learned per coefficient, "
                   "the scale starting at 0.01 (Barron's VAE experiment); validation then reports the ELBO"),
        Field("likelihood_rate", "float", 1.0, "Likelihood learning speed", lo=0.0, strict_lo=True, hi=1e4,
              advanced=True, applies=lambda c: (c.get("distribution") or "loss") != "loss",
              help="k in c = 0.01·softplus(k·ℓ + softplus⁻¹(1)) (and likewise for ν, α): how fast the "
                   "per-coefficient parameters learn under Adam; 1 is Barron's, who trained 50,000 steps"),
    )
    terms = (Term("recon", "reconstruction"), Term("kl", "KL"), ALPHA_TERM)
    representations = (Representation("z", "μ"),)
    required_embeddings = ("z", "logvar")

    def complete(self, config: dict, image_shape: tuple[int, int, int]) -> None:
        # Checked here (before the generic "does not apply" check) to name the reason.
        if config.get("colour") == "yuv" and image_shape[0] != 3:
            raise ConfigError(f"colour yuv needs colour images; {config['dataset']} has {image_shape[0]} channel(s) "
                              f"(leave the colour at rgb: it does not apply to grey images)", "colour")
        if config.get("distribution", "loss") != "loss" and config.get("loss") not in (None, "mse"):
            raise ConfigError(f"loss {config['loss']!r} is replaced by the distribution {config['distribution']!r}: "
                              f"leave the loss empty, or set the distribution to loss", "loss")

    def model_spec(self, config: dict, image_shape: tuple[int, int, int]) -> dict:
        return {"kind": self.model_kind, "image_shape": list(image_shape), "latent_dim": config["latent_dim"],
                "width": config["width"]}

    def active_terms(self, config: dict) -> tuple[Term, ...]:
        scheduled = config.get("loss") == "general" and config.get("loss_alpha_schedule") is not None \
            and (config.get("distribution") or "loss") == "loss"
        return self.terms if scheduled else tuple(t for t in self.terms if t is not ALPHA_TERM)

    def describe(self, config: dict, latent: bool = True) -> str:
        representation = config.get("representation") or "pixels"
        colour = config.get("colour") or "rgb"
        if representation == "pixels" and colour == "rgb":
            return self.title
        shape = (config.get("model") or {}).get("image_shape") or [3]
        parts = [TITLES[representation]] + ([TITLES[colour]] if shape[0] == 3 else [])
        return f"{self.title} ({' + '.join(parts)})"

    def embedding_shapes(self, config: dict) -> dict[str, tuple[tuple[int, ...], str]]:
        d = int(config["latent_dim"])
        return {"z": ((d,), "float"), "logvar": ((d,), "float")}

    def build(self, config: dict) -> VAEObjective:
        spec = config["model"]
        shape = tuple(spec["image_shape"])
        model = ConvVAE(shape, int(spec["latent_dim"]), int(spec.get("width", 32)))
        dims = shape[0] * shape[1] * shape[2]
        distribution = config.get("distribution") or "loss"
        if distribution == "loss":
            loss = build_loss(config, dims)
        else:
            loss = make_likelihood(distribution, dims, rate=float(config.get("likelihood_rate", 1.0)))
        representation = make_representation(shape, config.get("representation") or "pixels",
                                              config.get("colour") or "rgb")
        return track_training_fraction(VAEObjective(model, loss, representation=representation))

    def loss_weights(self, config: dict) -> dict[str, float]:
        return {"recon": 1.0, "kl": float(config["beta"])}

    @torch.no_grad()
    def evaluate(self, objective: VAEObjective, images: torch.Tensor, config: dict, *,
                 batch_size: int = 1024, progress: OnStep | None = None) -> dict[str, Any]:
        model, loss = objective.model, objective.loss
        device = objective_device(objective)
        was_training = objective.training
        objective.eval()
        elbo = has_elbo(config)
        generator = torch.Generator(device=device).manual_seed(mix_seed(int(config.get("seed", 0)), ELBO_STREAM))
        recon_sum, kl_sum, mus, elbo_sum, distortion_sum = 0.0, 0.0, [], 0.0, 0.0
        for chunk in batches(images, batch_size, progress):
            x = to_unit(chunk.to(device), objective.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=objective.amp):
                mu, logvar = model.encode(x)
                x_hat = model.decode(mu)
            recon_sum += objective.distortion(x, x_hat).sum().item()
            kl = kl_divergence(mu, logvar)
            kl_sum += kl.sum().item()
            mus.append(mu.float())
            if elbo:  # one z ~ q(z|x) per image, as Barron's estimate (n_samples 1)
                eps = torch.randn(mu.shape, generator=generator, device=device)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=objective.amp):
                    x_sample = model.decode(model.reparametrize(mu, logvar, eps))
                distortion = objective.distortion(x, x_sample)
                distortion_sum += distortion.sum().item()
                elbo_sum += (objective.log_abs_det - distortion - kl).sum().item()
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
        elif callable(getattr(loss, "scale", None)):
            out["scale_mean"] = float(loss.scale().mean().item())
        if callable(getattr(loss, "nu", None)):
            out["nu_mean"] = float(loss.nu().mean().item())
        if elbo:
            dims = math.prod(objective.image_shape)
            out["val_elbo"] = elbo_sum / n
            out["val_bpd"] = -out["val_elbo"] / (dims * math.log(2))
            out["val_distortion"] = distortion_sum / n
        return out

    def health(self, record: dict, config: dict) -> str | None:
        active = record.get("active_units")
        if isinstance(active, int) and active == 0:
            return ("no latent unit is active (the posterior collapsed onto the prior): lower β or use a "
                    "reconstruction loss that is not bounded")
        return None

    @torch.no_grad()
    def embed(self, objective: VAEObjective, images: torch.Tensor, *, batch_size: int = 1024,
              progress: OnStep | None = None) -> dict[str, torch.Tensor]:
        model = objective.model

        def encode(x: torch.Tensor) -> dict[str, torch.Tensor]:
            mu, logvar = model.encode(x)
            return {"z": mu, "logvar": logvar}

        d = model.latent_dim
        return encode_batches(objective, images, encode, {"z": torch.zeros(0, d), "logvar": torch.zeros(0, d)},
                              batch_size=batch_size, progress=progress)

    @torch.no_grad()
    def decode(self, objective: VAEObjective, z: torch.Tensor) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float32)
        z = z[None] if z.ndim == 1 else z
        x = objective.model.decode(z.to(objective_device(objective))).float().cpu()
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)

    def reconstruct(self, objective: VAEObjective, images: torch.Tensor) -> torch.Tensor:
        return self.decode(objective, self.embed(objective, images)["z"])

    def study_section(self, runs: list, log: Any) -> str | None:
        """Barron's ELBO table beside his, with the orderings compared (core.barron), for a study whose runs
        place the likelihood on a `distribution`; None for a study without any."""
        grid = [r for r in runs if (r.config.get("distribution") or "loss") != "loss"]
        if not grid:
            return None
        from core import barron

        table = barron.elbo_table(grid)
        if not table["representations"]:
            return None
        degenerate = {r.run_id: d for r in grid if (d := barron.diagnostics(r)) is not None}
        return barron.report_markdown(table, grid, level=2, degenerate=degenerate)

    @torch.no_grad()
    def sample(self, objective: VAEObjective, n: int, seed: int = 0) -> torch.Tensor:
        z = torch.randn(n, objective.model.latent_dim, generator=torch.Generator().manual_seed(seed))
        return self.decode(objective, z)
