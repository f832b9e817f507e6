"""VICReg (Bardes, Ponce & LeCun 2022, arXiv 2105.04906): self-supervised representations, with the
invariance term as any loss of the lab's registry.

Two views x_a, x_b of each training image (two augmentations drawn on the device, core/augment.py; or,
with views = "neighbours", the image and one of its k nearest training neighbours), through the encoder
and projector (models/vicreg.py): y = encoder(x) is the representation (probed and projected),
z = projector(y) the embedding (n × D') the loss sees:

    invariance_i = (1/D') Σ_d ρ(z_a,id − z_b,id)             ρ = the run's loss (MSE: r², VICReg's own)
    variance     = ½ [h(Z_a) + h(Z_b)],  h(Z) = (1/D') Σ_d max(0, γ − √(Var_i Z_id + ε))   (unbiased Var)
    covariance   = c(Z_a) + c(Z_b),      c(Z) = (1/D') Σ_{d≠e} C_de²,  C = (Z − Z̄)ᵀ(Z − Z̄) / (N − 1)
    loss         = λ · mean_i invariance_i + μ · variance + ν · covariance      (λ, μ, ν = 25, 25, 1; γ = 1;
                                                                              ε = 1e-4: the official code)

The invariance term is each image's mean over dimensions, so that with MSE the batch mean is exactly
F.mse_loss(z_a, z_b) of the official code. A robust ρ's scale c defaults to 1/√2, where every member
of the general family equals r² for small residuals (MSE = ρ(r, 2, 1/√2)): the losses then differ only in
how they treat large view disagreements, not in the weight λ effectively gives the term.

Variance and covariance are batch statistics, computed in float32 outside autocast (C is D'×D' and
overflows easily in half precision). Under `torchrun` they see the global batch: the embeddings of every
rank are gathered by an all-gather whose backward all-reduces the gradient (each rank's loss depends on
every rank's rows), N is the global batch size, and the batch norms become SyncBatchNorm (NCCL; gloo
on a CPU has no SyncBatchNorm, so there the normalisation statistics stay per process). The invariance
term stays per rank, before the gather, as in the official code.

Variants, as configuration: μ = 0 (var_weight 0: the variance term is still logged); views
"neighbours" (neighbour_run: a trained run of any family; its representation of the un-augmented,
un-shuffled training split picks each image's k nearest neighbours (Euclidean), and every step pairs
each image with one of them, drawn at random; the table is cached with that run as an evaluation);
the invariance loss (loss, loss_alpha, loss_scale, ...).

Logged: per step the three terms and the batch's mean per-dimension std of z; per epoch on the
validation split (two views drawn with a fixed seed, so epochs compare) the terms and val_loss, the
embeddings' per-dimension std (mean, smallest, and the mean at the epoch before), the effective rank
(exp of the entropy of the normalised singular values; Roy & Vetterli 2007) of the embeddings z and of
the representation y. `health` warns of collapse: the covariance term near zero (under 1 % of the
value 2D'/(N − 1) that sampling noise alone gives the two views' decorrelated unit-variance embeddings)
while the std falls, or a std that has all but vanished.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from core.augment import RECIPES, augment, recipe_pair
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
from core.families.recon import LOSS_FIELDS, UNSCALED_LOSSES, build_loss, check_loss
from core.fields import ConfigError, Field
from models.vicreg import ENCODERS, VICRegNet, _WithoutCounter

__all__ = ["EPS", "INVARIANCE_SCALE", "VICReg", "VICRegObjective", "covariance_term", "effective_rank",
           "gather_rows", "neighbour_table", "resolve_run", "variance_term"]

EPS = 1e-4  # inside the square root of the variance hinge (official code)
INVARIANCE_SCALE = 1 / math.sqrt(2)  # a robust ρ's default c: every member of the family is r² near 0
COLLAPSED_STD = 1e-2  # a mean per-dimension std below this: the embeddings sit on a point
COLLAPSE_COV_FRACTION = 0.01  # "near zero": under 1 % of the decorrelated-noise floor 2D'/(N − 1)
STREAM_VIEW_A, STREAM_VIEW_B, STREAM_NEIGHBOUR = 4, 5, 6  # Batch generator streams (VAE: 2, VQ-VAE: 3)
VALIDATION_STREAM = 7
# Per-dataset normalisation, (mean, std) per channel: CIFAR-10's from solo-learn's recipe; Fashion-MNIST's
# and digits' measured on the lab's training splits; MNIST's the usual published figures. Others: 0.5, 0.5.
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "fashion_mnist": ((0.2860,), (0.3529,)),
    "digits": ((0.3060,), (0.3762,)),
    "mnist": ((0.1307,), (0.3081,)),
}

_INVARIANCE_LABELS = {
    "loss": ("Invariance loss", "ρ between the two views' embeddings, averaged over dimensions: MSE (r²) is "
                                "VICReg's; Cauchy, Charbonnier, the adaptive loss (α and c learned per "
                                "dimension) are the lab's question"),
    "loss_scale": ("Scale c", "where ρ bends, in embedding units (the variance term holds each dimension's std "
                              "near 1); empty: 1/√2, where every ρ equals r² for small residuals"),
}
INVARIANCE_FIELDS: tuple[Field, ...] = tuple(
    replace(f, label=_INVARIANCE_LABELS[f.name][0], help=_INVARIANCE_LABELS[f.name][1])
    if f.name in _INVARIANCE_LABELS else f for f in LOSS_FIELDS)


def _encoder_of(config: dict, image_shape: tuple[int, ...] | None = None) -> str:
    """The encoder a config means: "auto" is the ResNet-18 for 32×32 colour images, the small net otherwise."""
    name = config.get("encoder") or "auto"
    if name != "auto":
        return name
    if image_shape is None:
        from core.datasets import DATASETS

        info = DATASETS.get(config.get("dataset") or "")
        image_shape = info.image_shape if info else None
    return "resnet18" if image_shape is not None and tuple(image_shape) == (3, 32, 32) else "small"


def _augmenting(config: dict) -> bool:
    return (config.get("views") or "augment") == "augment"


def parse_widths(text: str) -> list[int]:
    """"512-512-512" -> [512, 512, 512]; ValueError for anything else."""
    parts = str(text).replace(",", "-").split("-")
    widths = [int(p) for p in parts if p.strip()]
    if not widths or min(widths) < 1 or len(widths) > 8 or max(widths) > 65536:
        raise ValueError(text)
    return widths


# ---------------------------------------------------------------------------------------------------
# The loss's batch statistics


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = EPS) -> torch.Tensor:
    """(1/D) Σ_d max(0, γ − √(Var z_d + ε)), the unbiased variance over the rows, in float32."""
    z = z.float()
    std = torch.sqrt(z.var(dim=0) + eps)
    return torch.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """(1/D) Σ_{d≠e} C_de², C = (z − z̄)ᵀ(z − z̄)/(N − 1), in float32."""
    z = z.float()
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.square().sum() / d


def effective_rank(z: torch.Tensor) -> float:
    """exp(H(p)), p = the centred matrix's singular values normalised to sum 1 (Roy & Vetterli 2007):
    D for isotropic rows, 1 when they lie on a line, 0 for identical rows."""
    z = z.double()
    s = torch.linalg.svdvals(z - z.mean(dim=0))
    total = s.sum()
    if not total > 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


class _GatherRows(torch.autograd.Function):
    """All ranks' rows (rank-major). Backward: the gradient is all-reduced (every rank's loss depends on
    every row) and each rank keeps its own rows' part. Ranks may hold one row more than others."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, sizes: tuple[int, ...], rank: int) -> torch.Tensor:  # type: ignore[override]
        ctx.sizes, ctx.rank = sizes, rank
        padded = z.new_zeros(max(sizes), z.shape[1])
        padded[: z.shape[0]] = z
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def gather_rows(z: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The global batch's rows of z (each rank holds rows rank::world of it); z itself on one process."""
    if batch.world <= 1:
        return z
    sizes = tuple(len(range(r, batch.global_size, batch.world)) for r in range(batch.world))
    return _GatherRows.apply(z, sizes, batch.rank)


# ---------------------------------------------------------------------------------------------------
# Neighbours as views


def resolve_run(name: str) -> Any:
    """The run `name` names: a path to a run directory, or a run id under the runs folder, then checkpoints/."""
    from core.runs import RunFormatError, checkpoints_root, open_run, runs_root

    candidates = [Path(name).expanduser()]
    if "/" not in name:
        candidates += [runs_root() / name, checkpoints_root() / name]
    for path in candidates:
        if (path / "config.json").is_file():
            return open_run(path)
    raise RunFormatError(f"neighbour_run {name!r} is not a run: give a run directory or the id of a run in "
                         f"{runs_root()} or {checkpoints_root()} (a finished run whose representation picks the "
                         f"neighbours)")


def neighbour_table(source: Any, dataset: str, limit: int | None, k: int, device: str | torch.device = "cpu"
                    ) -> torch.Tensor:
    """(n, k) int64: for each image of `dataset`'s training split (its first `limit`, in the split's own,
    un-shuffled order) the positions of its k nearest others in `source`'s representation (Euclidean),
    nearest first. Cached with the source run (an evaluation keyed by its weights' step)."""
    from core.datasets import load_split
    from core.families import family_of, load_objective
    from core.neighbourhood import knn
    from core.runs import RunFormatError

    status = source.status()
    if status.get("state") != "finished":
        raise RunFormatError(f"neighbour_run {source.run_id} is {status.get('state')!r}; the neighbours need a "
                             f"finished run")
    if source.config.get("dataset") != dataset:
        raise ConfigError(f"neighbour_run {source.run_id} was trained on {source.config.get('dataset')}, this run "
                          f"on {dataset}; pick a run of the same dataset", "neighbour_run")
    train = load_split(dataset, "train", limit=limit)
    n = len(train)
    if not 1 <= k < n:
        raise ConfigError(f"neighbours_k must be between 1 and {n - 1} for {n} training images", "neighbours_k")
    stamp = hashlib.blake2b(f"{dataset}|{limit}|{k}|{status.get('step')}".encode(), digest_size=6).hexdigest()
    name = f"neighbours-train-n{n}-k{k}-{stamp}"
    hit = source.evaluation(name)
    if hit is not None and tuple(hit[1].get("neighbours", torch.zeros(0)).shape) == (n, k):
        return hit[1]["neighbours"].long()
    objective = load_objective(source, device)
    z = family_of(source.config).embed(objective, train.images)["z"]
    _, index = knn(z.to(device), k)
    table = index.cpu().to(torch.int32)  # half the bytes of int64 in the source run's cache
    with contextlib.suppress(OSError):  # a read-only source: the table is used, just not kept
        source.save_evaluation(name, {"kind": "neighbours", "dataset": dataset, "split": "train", "n": n, "k": k,
                                      "metric": "euclidean", "representation": "z", "model_step": status.get("step")},
                               {"neighbours": table})
    return table.long()


class _NeighbourViews:
    """The training images and each one's neighbour table, on the device: a batch's second views."""

    def __init__(self, images: torch.Tensor, table: torch.Tensor) -> None:
        self.images, self.table = images, table
        self.checked = False

    def partners(self, batch: Batch) -> torch.Tensor:
        """uint8 images of one neighbour per batch image, drawn uniformly among its k (global batch draw)."""
        if not self.checked:  # the pitfall of shuffled or augmented neighbour indices: positions must agree
            if batch.index.max() >= len(self.images) or not torch.equal(self.images[batch.index], batch.images):
                raise RuntimeError("the batch's images are not the training split at batch.index: the neighbour "
                                   "table would pair the wrong images (a different training limit or data?)")
            self.checked = True
        k = self.table.shape[1]
        pick = torch.randint(k, (batch.global_size,), generator=batch.generator(STREAM_NEIGHBOUR), device=batch.device)
        if batch.world > 1:
            pick = pick[batch.rank :: batch.world]
        return self.images[self.table[batch.index, pick]]


# ---------------------------------------------------------------------------------------------------
# The objective and the family


class VICRegObjective(Objective):
    """The VICReg network and its invariance loss; forward(batch) -> invariance (per image), variance,
    covariance and the batch's std (batch statistics, float32)."""

    def __init__(self, model: VICRegNet, loss: nn.Module, config: dict, *, amp: bool = False,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.amp = amp
        self.channels_last = channels_last
        self.image_shape = model.image_shape
        self.gamma = float(config["variance_target"])
        self.recipes = recipe_pair(config["augment"], config.get("crop_scale_min"))
        self.views = config["views"]
        self._neighbour_spec = (config.get("neighbour_run"), config["dataset"], config.get("limit_train"),
                                int(config["neighbours_k"]))
        self._neighbours: _NeighbourViews | None = None
        # The validation embeddings' mean std at the last epoch's end: a buffer, so it is checkpointed and a
        # resumed run's collapse warning compares with the same value.
        self.register_buffer("std_before", torch.tensor(float("nan")))

    def _second_views(self, batch: Batch) -> torch.Tensor:
        if self._neighbours is None:
            source, dataset, limit, k = self._neighbour_spec
            if not source:
                raise ConfigError("views 'neighbours' need neighbour_run: a trained run whose representation picks "
                                  "the neighbours", "neighbour_run")
            from core.datasets import load_split

            table = neighbour_table(resolve_run(source), dataset, limit, k)
            images = load_split(dataset, "train", batch.device, limit=limit).images
            self._neighbours = _NeighbourViews(images, table.to(batch.device))
        return self._neighbours.partners(batch)

    def views_of(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views, float in [0, 1]: augmentations drawn for the global batch, or image and neighbour."""
        x = to_unit(batch.images)
        if self.views == "neighbours":
            a, b = x, to_unit(self._second_views(batch))
        else:
            a = augment(x, self.recipes[0], batch.generator(STREAM_VIEW_A), total=batch.global_size, rank=batch.rank,
                        world=batch.world)
            b = augment(x, self.recipes[1], batch.generator(STREAM_VIEW_B), total=batch.global_size, rank=batch.rank,
                        world=batch.world)
        if self.channels_last:
            a, b = (v.contiguous(memory_format=torch.channels_last) for v in (a, b))
        return a, b

    def terms(self, z_a: torch.Tensor, z_b: torch.Tensor, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        """The loss's terms from the two views' embeddings (this rank's rows)."""
        z_a, z_b = z_a.float(), z_b.float()
        invariance = self.loss(z_a - z_b).mean(dim=1)
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            g_a = gather_rows(z_a, batch) if batch is not None else z_a
            g_b = gather_rows(z_b, batch) if batch is not None else z_b
            variance = (variance_term(g_a, self.gamma) + variance_term(g_b, self.gamma)) / 2
            covariance = covariance_term(g_a) + covariance_term(g_b)
            std = torch.sqrt(g_a.detach().var(dim=0) + EPS).mean()
        return {"invariance": invariance, "variance": variance, "covariance": covariance, "std": std}

    def forward(self, batch: Batch) -> dict[str, dict[str, torch.Tensor]]:
        a, b = self.views_of(batch)
        with torch.autocast(device_type=a.device.type, dtype=torch.bfloat16, enabled=self.amp):
            _, z_a = self.model(a)
            _, z_b = self.model(b)
        return {"terms": self.terms(z_a, z_b, batch), "counts": {}}


class _PlainBatchNorm(_WithoutCounter, nn.modules.batchnorm._BatchNorm):
    """Unsynchronised batch norm over (N, C) or (N, C, H, W) inputs, as SyncBatchNorm takes both."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")


def _local_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose SyncBatchNorm layers are plain batch norms (validation runs on one rank: a
    synchronised norm would wait for the others)."""
    import copy

    clone = copy.deepcopy(model)
    for parent in [clone, *clone.modules()]:
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.SyncBatchNorm):
                plain = _PlainBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                        child.track_running_stats)
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain.to(next(child.buffers()).device))
    return clone


def _sync_batch_norm_wanted() -> bool:
    """Under torchrun with NCCL: SyncBatchNorm exists only for GPUs."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 and \
        dist.get_backend() == "nccl"


class VICReg(Family):
    name = "vicreg"
    title = "VICReg"
    summary = ("Self-supervised: two views of each image, an invariance term (any loss of the registry), a "
               "variance hinge and a covariance penalty; no decoder. The course recipe: --lr 3e-4 "
               "--weight-decay 1e-6 --batch-size 256.")
    model_kind = "vicreg"
    id_tag = "vicreg"
    takes_reconstruction_loss = False  # there is no reconstruction: the loss fields are the invariance term's
    fields = (
        *INVARIANCE_FIELDS,
        Field("latent_dim", "int", 128, "Representation size D", lo=1, hi=8192,
              help="the encoder's output y, the representation probed, projected and compared"),
        Field("encoder", "choice", "auto", "Encoder", choices=("auto", *ENCODERS),
              titles=(("auto", "by image size"), ("resnet18", "ResNet-18"), ("small", "small conv net")),
              help="auto: ResNet-18 (3×3 stride-1 stem, no max-pool) for 32×32 colour, a small conv net otherwise"),
        Field("width", "int", 32, "Small encoder width", lo=1, hi=1024, advanced=True,
              applies=lambda c: _encoder_of(c) == "small",
              help="the small conv net's first channels (then 2×, 4×, 4×)"),
        Field("projector", "str", "512-512-512", "Projector widths", advanced=True,
              help="the expander's layer widths, e.g. 8192-8192-8192 (official), 2048-2048-2048 (CIFAR)"),
        Field("inv_weight", "float", 25.0, "Invariance weight λ", lo=0.0, hi=1e6),
        Field("var_weight", "float", 25.0, "Variance weight μ", lo=0.0, hi=1e6,
              help="0: the ablation without the variance term (it is still logged)"),
        Field("cov_weight", "float", 1.0, "Covariance weight ν", lo=0.0, hi=1e6),
        Field("variance_target", "float", 1.0, "Target std γ", lo=0.0, strict_lo=True, hi=1e3, advanced=True),
        Field("views", "choice", "augment", "Views", choices=("augment", "neighbours"),
              titles=(("augment", "two augmentations"), ("neighbours", "an image and its neighbour")),
              help="augment: two augmentations of each image; neighbours: an image and one of its nearest "
                   "training neighbours in a trained run's representation, no augmentation"),
        Field("augment", "choice", "cifar", "Augmentations", choices=tuple(RECIPES), applies=_augmenting,
              titles=(("cifar", "CIFAR recipe"), ("course", "the course's (blur, no solarise)"),
                      ("official", "official (ImageNet, asymmetric)"), ("crop_flip", "crops and flips only")),
              help="cifar: solo-learn's CIFAR recipe; course: the VICReg course's (blur, no solarise); official: the "
                   "asymmetric ImageNet one; crop_flip: crops and flips only"),
        Field("crop_scale_min", "float", 0.2, "Smallest crop area", lo=0.0, strict_lo=True, hi=1.0, advanced=True,
              applies=_augmenting, help="the random resized crop's area fraction lies in [this, 1]"),
        Field("neighbour_run", "str", None, "Neighbour run", optional=True,
              applies=lambda c: c.get("views") == "neighbours",
              help="a finished run (id or folder) whose representation of the training split picks the neighbours"),
        Field("neighbours_k", "int", 3, "Neighbours k", lo=1, hi=1000, applies=lambda c: c.get("views") == "neighbours",
              help="each image is paired with one of its k nearest (the course: 3)"),
    )
    terms = (Term("invariance", "invariance"), Term("variance", "variance hinge", per_example=False),
             Term("covariance", "covariance", per_example=False),
             Term("std", "embedding std (batch)", per_example=False, lower_is_better=False))
    representations = (Representation("z", "y (encoder output)"),)

    # -- configuration -------------------------------------------------------------------------------------
    def validate(self, config: dict, image_shape: tuple[int, int, int]) -> None:
        try:
            widths = parse_widths(config["projector"])
        except ValueError:
            raise ConfigError(f"projector {config['projector']!r} is not a list of layer widths such as 512-512-512 "
                              f"(1 to 8 widths, each 1 to 65,536)", "projector") from None
        check_loss(config, widths[-1])
        if config["views"] == "neighbours" and not config.get("neighbour_run"):
            raise ConfigError("neighbour_run is needed with views 'neighbours': the id or folder of a finished run "
                              "whose representation picks each image's neighbours", "neighbour_run")
        _, h, w = image_shape
        if min(h, w) < 4:
            raise ConfigError(f"VICReg's encoders need images of at least 4×4, not {h}×{w}", "dataset")

    def model_spec(self, config: dict, image_shape: tuple[int, int, int]) -> dict:
        mean, std = NORMALISATION.get(config["dataset"], ((0.5,) * image_shape[0], (0.5,) * image_shape[0]))
        return {"kind": self.model_kind, "image_shape": list(image_shape), "encoder": _encoder_of(config, image_shape),
                "latent_dim": config["latent_dim"], "width": config["width"],
                "projector": parse_widths(config["projector"]), "mean": list(mean), "std": list(std)}

    def describe(self, config: dict, latent: bool = True) -> str:
        encoder = {"resnet18": "ResNet-18", "small": "small conv"}.get(_encoder_of(config), "?")
        extra = []
        if float(config.get("var_weight", 25.0)) == 0:
            extra.append("μ=0")
        if config.get("views") == "neighbours":
            extra.append("neighbours as views")
        size = [f"D={config.get('latent_dim')}"] if latent else []
        return f"VICReg ({', '.join([encoder, *size, *extra])})"

    # -- training --------------------------------------------------------------------------------------------
    def build(self, config: dict) -> VICRegObjective:
        spec = config["model"]
        model = VICRegNet(spec["image_shape"], int(spec["latent_dim"]), spec["encoder"], int(spec["width"]),
                          [int(v) for v in spec["projector"]], spec.get("mean"), spec.get("std"))
        if _sync_batch_norm_wanted():
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        loss_config = dict(config)
        if loss_config.get("loss_scale") is None and loss_config["loss"] not in UNSCALED_LOSSES:
            loss_config["loss_scale"] = INVARIANCE_SCALE
        return VICRegObjective(model, build_loss(loss_config, model.embedding_dim), config)

    def loss_weights(self, config: dict) -> dict[str, float]:
        return {"invariance": float(config["inv_weight"]), "variance": float(config["var_weight"]),
                "covariance": float(config["cov_weight"])}

    @torch.no_grad()
    def evaluate(self, objective: VICRegObjective, images: torch.Tensor, config: dict, *,
                 progress: OnStep | None = None) -> dict[str, Any]:
        """The loss on the validation split (two augmented views, drawn with the run's seed, the same each
        epoch; batches of the training size), and the embeddings' std and effective ranks.

        The network runs as it trains, with batch statistics in its batch norms (on a copy, so the running
        statistics are untouched): early in training the running statistics lag far behind the batches',
        and eval-mode embeddings would look collapsed when they are not."""
        device = objective_device(objective)
        net = _local_copy(objective.model).train()
        size = max(2, int(config["batch_size"]))
        sums = {"invariance": 0.0, "variance": 0.0, "covariance": 0.0}
        counted, ys, zs = 0, [], []
        for number, chunk in enumerate(batches(images, size, progress)):
            if chunk.shape[0] < 2:  # batch statistics need two images
                continue
            x = to_unit(chunk.to(device))
            pair = []
            for view, stream in enumerate((STREAM_VIEW_A, STREAM_VIEW_B)):
                gen = torch.Generator(device=device).manual_seed(mix_seed(int(config["seed"]), VALIDATION_STREAM,
                                                                          stream, number))
                pair.append(augment(x, objective.recipes[view], gen))
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=objective.amp):
                y, z = net(x)
                z_a, z_b = net(pair[0])[1], net(pair[1])[1]
            ys.append(y.float())
            zs.append(z.float())
            terms = objective.terms(z_a, z_b)
            n = chunk.shape[0]
            sums["invariance"] += float(terms["invariance"].sum())
            sums["variance"] += float(terms["variance"]) * n
            sums["covariance"] += float(terms["covariance"]) * n
            counted += n
        out: dict[str, Any] = {f"val_{k}": v / max(1, counted) for k, v in sums.items()}
        weights = self.loss_weights(config)
        out["val_loss"] = sum(weights[k] * out[f"val_{k}"] for k in sums)
        width = objective.model.embedding_dim
        y_all = torch.cat(ys) if ys else torch.zeros(0, objective.model.latent_dim)
        z_all = torch.cat(zs) if zs else torch.zeros(0, width)
        std = z_all.var(dim=0).add(EPS).sqrt() if z_all.shape[0] > 1 else torch.zeros(width)
        before = float(objective.std_before)
        out.update({"embedding_std": float(std.mean()), "embedding_std_min": float(std.min()),
                    "embedding_std_before": before if math.isfinite(before) else None,
                    "embedding_rank": effective_rank(z_all), "representation_rank": effective_rank(y_all),
                    "noise_floor_covariance": 2 * width / max(1, min(size, max(2, z_all.shape[0])) - 1),
                    "alpha_mean": None, "scale_mean": None})
        objective.std_before.fill_(out["embedding_std"])
        loss = objective.loss
        if callable(getattr(loss, "alpha", None)) and callable(getattr(loss, "scale", None)):
            out["alpha_mean"] = float(loss.alpha().mean())
            out["scale_mean"] = float(loss.scale().mean())
        return out

    def health(self, record: dict, config: dict) -> str | None:
        std, before = record.get("embedding_std"), record.get("embedding_std_before")
        cov, floor = record.get("val_covariance"), record.get("noise_floor_covariance")
        rank = record.get("embedding_rank")
        rank_text = f"; effective rank {rank:.1f} of {parse_widths(config['projector'])[-1]}" if isinstance(
            rank, (int, float)) else ""
        if isinstance(std, (int, float)) and std < COLLAPSED_STD:
            return (f"the embeddings collapsed: their per-dimension std is {std:.2g}{rank_text} (keep the variance "
                    f"term on, var_weight > 0, or lower the learning rate)")
        near_zero = isinstance(cov, (int, float)) and isinstance(floor, (int, float)) and \
            cov < COLLAPSE_COV_FRACTION * floor
        falling = isinstance(before, (int, float)) and isinstance(std, (int, float)) and std < before
        if near_zero and falling:
            return (f"collapsing: the covariance term is {cov:.2g}, near zero, while the embeddings' std falls "
                    f"({before:.3g} → {std:.3g}){rank_text}; the variance term (var_weight) keeps it up")
        return None

    # -- what it produces ------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, objective: VICRegObjective, images: torch.Tensor, *, batch_size: int = 1024,
              progress: OnStep | None = None) -> dict[str, torch.Tensor]:
        model = objective.model
        return encode_batches(objective, images, lambda x: {"z": model.represent(x)},
                              {"z": torch.zeros(0, model.latent_dim)}, batch_size=batch_size, progress=progress)

    def loss_maps(self, objective: VICRegObjective) -> dict[str, torch.Tensor] | None:
        return None  # the invariance loss's α and c are per embedding dimension: no image to draw

    # -- studies ---------------------------------------------------------------------------------------------
    def study_section(self, runs: list, log: Any) -> str | None:
        """The VICReg course's evaluations of every finished run (core.analyses, cached with each run) and the table
        against the course's figures, with the lab's question: does a robust invariance loss help?"""
        from core.analyses import course_report, machine_text, report_rows

        rows = report_rows(runs, progress=lambda message: log(f"evaluations: {message}"))
        return course_report(rows, machine_text(), level=2) if rows else None
