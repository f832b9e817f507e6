"""What a model family is: the one protocol between "what is trained" and the rest of the lab.

The engine, the run store, probes, projections, the study command, the run archive and the pages talk to
a `Family` only. A family declares

- `fields`: its configuration fields (`Field`), declared once; the command-line flags, the Train page's
  form, validation and config.json all come from these declarations;
- `terms`: the per-example quantities it logs each step (`Term`), and `loss_weights(config)`, which of
  them make up the training loss and with what weight:  loss = Σ_t w_t · mean_batch(term_t);
- `build(config)`: an `Objective`, the nn.Module trained and saved (the network, the reconstruction loss
  with its learned α and c, codebooks, ...), whose forward takes a `Batch` and returns
  {"terms": {name: (B,) or () tensor}, "counts": {name: tensor}};
- `evaluate`: validation metrics per epoch (`val_loss` and the family's own); `epoch_metrics`: what the
  epoch's summed `counts` mean; `health`: a warning for a run going wrong in a way that is not NaN;
- `embed`: the representation that is probed and projected (`z`, plus extras such as `logvar` or `codes`),
  and `representations`, which of those a probe or a projection can use;
- what it can show: `reconstruct`, `decode`, `sample` (a prior), `loss_maps` (a learned α/c map). A
  view a family cannot offer is `None`, and the pages do not draw it.

Adding a family is its network in `models/`, one module here and one registry line in `__init__.py`
(docs/FAMILIES.md has the recipe, with the VQ-VAE as the worked example).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from core.callbacks import OnStep
from core.fields import Field

__all__ = ["Batch", "Family", "Field", "Objective", "Representation", "Term", "encode_batches", "load_weights",
           "mix_seed", "to_unit", "weights_of"]


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64-style), so (seed, stream, step) streams never coincide."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def to_unit(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 images (B, C, H, W) -> float32 in [0, 1] (channels_last on request)."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@dataclass
class Batch:
    """One optimiser step's data on the training device, already this rank's share of the global batch.

    images uint8 (b, C, H, W), labels int64 (b,), index int64 (b,) (positions in the training split);
    `step` is the global optimiser step (1-based). Randomness comes from `normal` and `generator`, drawn
    for the whole global batch from (seed, stream, step) and sliced to this rank's rows, so that neither
    the batch order, the number of processes nor an interruption changes what a step sees."""

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    step: int
    seed: int
    global_size: int
    rank: int = 0
    world: int = 1
    fraction: float = 0.0  # how much of the training is done before this step (0 ≤ f < 1): for schedules

    @property
    def device(self) -> torch.device:
        return self.images.device

    def generator(self, stream: int) -> torch.Generator:
        """A generator on the device for this step and `stream` (the same on every rank)."""
        return torch.Generator(device=self.device).manual_seed(mix_seed(self.seed, stream, self.step))

    def normal(self, *shape: int, stream: int = 2) -> torch.Tensor:
        """N(0, 1) noise of shape (global batch, *shape), this rank's rows."""
        noise = torch.randn(self.global_size, *shape, generator=self.generator(stream), device=self.device)
        return noise[self.rank :: self.world] if self.world > 1 else noise


@dataclass(frozen=True)
class Term:
    """A quantity a family logs per step: `name` (its key in history.jsonl), how it is titled, and
    whether lower is better (for charts). `per_example`: a (B,) value per image, else a batch statistic."""

    name: str
    title: str
    per_example: bool = True
    lower_is_better: bool = True


class Objective(nn.Module):
    """What a family builds: the module trained and saved. forward(batch) -> {"terms", "counts"}.

    It holds the network as `model` and any other trained or saved part as a named child (`loss`, the
    reconstruction loss with its learned α and c); model.safetensors stores them by those names
    (`weights_of`). `amp` asks for bf16 autocast of the network (CUDA); `channels_last` for that layout."""

    amp: bool = False
    channels_last: bool = False

    def forward(self, batch: Batch) -> dict[str, dict[str, torch.Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Representation:
    """One representation `embed` returns under `key`: its title for tables and captions."""

    key: str
    title: str


class Family:
    """A kind of model the lab trains. Subclasses set the class attributes and override the methods."""

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str] = ""
    fields: ClassVar[tuple[Field, ...]] = ()
    terms: ClassVar[tuple[Term, ...]] = ()
    takes_reconstruction_loss: ClassVar[bool] = True
    representations: ClassVar[tuple[Representation, ...]] = (Representation("z", "z"),)
    # The embeddings' keys a run must have (embeddings.safetensors; labels and indices come with every run).
    required_embeddings: ClassVar[tuple[str, ...]] = ("z",)
    model_kind: ClassVar[str] = ""
    default_optimizer: ClassVar[str] = "adam"
    # The id tag of this family's runs ("" for the lab's first family, the VAE, whose run ids predate it).
    id_tag: ClassVar[str] = ""

    # -- configuration -------------------------------------------------------------------------------------
    def validate(self, config: dict, image_shape: tuple[int, int, int]) -> None:
        """Checks across fields (ConfigError naming one); `config` holds every field, checked singly."""

    def complete(self, config: dict, image_shape: tuple[int, int, int]) -> None:
        """Fill fields whose default depends on others (e.g. the VQ-VAE's grid), in place."""

    def model_spec(self, config: dict, image_shape: tuple[int, int, int]) -> dict:
        """config.json's "model": what rebuilds the network."""
        raise NotImplementedError

    def latent_size(self, config: dict) -> int:
        """The latent size comparable across families (floats in the representation that is probed)."""
        return int(config["latent_dim"])

    def describe(self, config: dict, latent: bool = True) -> str:
        """A short label of the model for tables: "VAE", "VQ-VAE (K=512, 4×4×4)". latent=False leaves out
        what follows from the latent size, so runs of one setting at several sizes share a label (the
        latent-size sweep's lines)."""
        return self.title

    def embedding_shapes(self, config: dict) -> dict[str, tuple[tuple[int, ...], str]]:
        """What `embed` returns for this config: key -> (shape after the row axis, "float" or "int")."""
        return {"z": ((self.latent_size(config),), "float")}

    # -- training --------------------------------------------------------------------------------------------
    def build(self, config: dict) -> Objective:
        raise NotImplementedError

    def loss_weights(self, config: dict) -> dict[str, float]:
        """Term name -> weight in the training loss; terms not named are logged only."""
        raise NotImplementedError

    def active_terms(self, config: dict) -> tuple[Term, ...]:
        """The terms a run with this config logs (all of `terms` unless a setting turns one off)."""
        return self.terms

    def evaluate(self, objective: Objective, images: torch.Tensor, config: dict, *,
                 progress: OnStep | None = None) -> dict[str, Any]:
        """Validation metrics at an epoch's end: "val_loss" (per image) and the family's own.
        progress(done, total) is told the images done as it goes."""
        raise NotImplementedError

    def epoch_metrics(self, counts: dict[str, torch.Tensor], config: dict) -> dict[str, Any]:
        """What an epoch's summed `counts` mean (e.g. codes used); merged into the epoch record."""
        return {}

    def health(self, record: dict, config: dict) -> str | None:
        """A warning for the run's status from an epoch record (e.g. "code usage collapsed"), or None."""
        return None

    # -- what it produces ------------------------------------------------------------------------------------
    def embed(self, objective: Objective, images: torch.Tensor, *, batch_size: int = 1024,
              progress: OnStep | None = None) -> dict[str, torch.Tensor]:
        """The representation of uint8 images (N, C, H, W), float32 on the CPU: {"z": (N, d), extras}."""
        raise NotImplementedError

    def reconstruct(self, objective: Objective, images: torch.Tensor) -> torch.Tensor | None:
        """x̂ of uint8 images as uint8, or None when the family has no decoder."""
        return None

    def decode(self, objective: Objective, z: torch.Tensor) -> torch.Tensor | None:
        """uint8 images decoded from stored representations `z` (rows of embed()["z"]), or None."""
        return None

    def sample(self, objective: Objective, n: int, seed: int = 0) -> torch.Tensor | None:
        """n uint8 images from the family's prior, or None when it has none."""
        return None

    def loss_maps(self, objective: Objective) -> dict[str, torch.Tensor] | None:
        """The learned per-pixel α and c of an adaptive reconstruction loss, (C, H, W) each, or None."""
        loss = getattr(objective, "loss", None)
        if loss is None or not callable(getattr(loss, "alpha", None)) or not callable(getattr(loss, "scale", None)):
            return None
        shape = getattr(objective, "image_shape", None)
        with torch.no_grad():
            alpha, scale = loss.alpha().detach().float().cpu(), loss.scale().detach().float().cpu()
        if shape is not None and alpha.numel() == math.prod(shape):
            alpha, scale = alpha.reshape(shape), scale.reshape(shape)
        return {"alpha": alpha, "scale": scale}

    # -- studies --------------------------------------------------------------------------------------------
    def study_section(self, runs: list, log: Callable[[str], None]) -> str | None:
        """A study's extra report section for this family's finished runs (Markdown), computing and caching
        what it needs with the runs (e.g. the class penalty's λ chosen on validation); None for none."""
        return None

    # -- helpers ---------------------------------------------------------------------------------------------
    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def term_names(self) -> list[str]:
        return [t.name for t in self.terms]


def weights_of(objective: nn.Module) -> dict[str, torch.Tensor]:
    """What model.safetensors holds: the network's state (`objective.model`) under its own names, and
    every other part's (the loss's α and c) under `<part>.` (`loss.alpha_latent`)."""
    return {_stored_name(key): value for key, value in objective.state_dict().items()}


def _stored_name(key: str) -> str:
    return key[len("model."):] if key.startswith("model.") else key


def load_weights(objective: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load `weights_of`-style tensors into an objective; RuntimeError when they do not fit it exactly."""
    actual = {_stored_name(key): key for key in objective.state_dict()}
    state = {actual.get(key, f"model.{key}"): value for key, value in tensors.items()}
    objective.load_state_dict(state)


def objective_device(objective: nn.Module) -> torch.device:
    return next(objective.parameters()).device


@torch.no_grad()
def encode_batches(objective: nn.Module, images: torch.Tensor,
                   encode: Callable[[torch.Tensor], dict[str, torch.Tensor]], empty: dict[str, torch.Tensor], *,
                   batch_size: int = 1024, progress: OnStep | None = None) -> dict[str, torch.Tensor]:
    """`encode(x)` on uint8 `images` in slices: x in [0, 1] on the objective's device (channels_last and
    under bf16 autocast on a GPU), the model in eval mode (restored after). Each output key is concatenated
    on the CPU, floats as float32; `empty` gives each key's value for zero images."""
    model = objective.model
    device = objective_device(objective)
    amp = device.type == "cuda"
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in empty}
    try:
        for chunk in batches(images, batch_size, progress):
            x = to_unit(chunk.to(device), amp)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                out = encode(x)
            for key, value in out.items():
                parts[key].append((value.float() if value.is_floating_point() else value).cpu())
    finally:
        model.train(was_training)
    return {key: torch.cat(values) if values else empty[key] for key, values in parts.items()}


def batches(images: torch.Tensor, batch_size: int, progress: OnStep | None = None
            ) -> Iterator[torch.Tensor]:
    """`images` in slices of `batch_size`, telling `progress(done, total)` before each and at the end."""
    total = images.shape[0]
    for start in range(0, total, batch_size):
        if progress is not None:
            progress(start, total)
        yield images[start : start + batch_size]
    if progress is not None:
        progress(total, total)
