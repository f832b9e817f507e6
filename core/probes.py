"""Probes: how much class information a run's latent space holds, measured by classifiers trained on it.

Every probe is fitted on the latents of the dataset's TRAIN split and scored on its TEST split, never on
the images it was fitted on (a probe scored on its own training images reports memorisation, which is
how a VAE-latent probe on CIFAR-10 can seem to reach 0.78, a figure no published VAE probe comes near).
The splits are the fixed ones of `core.datasets`; when both come from the same official file (digits)
their positions are checked disjoint, and test images byte-identical to a probe-training image are
counted and reported.

Three probes, each reporting test accuracy and cross-entropy (mean −log p(y | x), in nats):

- MLP (the classifier of the reference robust-loss VAE study):
  an `MLPClassifier` (one hidden layer) on reparametrised samples
  z = μ + σ·ε, ε ~ N(0, I), drawn afresh every epoch; scored on one seeded sample per test image.
  Repeated over several seeds (initialisation, batch order, ε), mean and standard deviation reported.
- linear: multinomial logistic regression on μ (standardised with the probe-training statistics),
  fitted by L-BFGS with an L2 penalty λ·‖W‖²; convex, so one deterministic fit.
- k-NN: cosine similarity s(x, x') = x·x' / (‖x‖‖x'‖) on μ; the k most similar training points vote
  with weights exp(s/τ); p(c | x) = (1 − η)·Σ_{j: y_j = c} w_j / Σ_j w_j + η/C, where the small η keeps
  the cross-entropy finite when the vote is unanimous and wrong. Several k; the one reported is
  chosen by leave-one-out accuracy on the probe-training set.

    results = probe_run(run)            # computes (encodes the splits with the run's model) or reuses
    results = run.probes()              # what was saved: {"settings", "split", "probes", ...}

Results are saved with the run (`Run.save_probes`, probes.json) and reused while the settings and the
run's weights (its final step) are unchanged. `python -m core.probes RUN_DIR ...` probes from the shell.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from models.classifier import MLPClassifier

__all__ = [
    "PROBE_VERSION",
    "LatentSet",
    "ProbeSettings",
    "encode_split",
    "knn_probe",
    "linear_probe",
    "mlp_probe",
    "probe_latents",
    "probe_run",
    "seed_mlp_probe",
    "summary",
    "well_formed",
]

PROBE_VERSION = 2  # bump when a probe's method changes, so saved results are recomputed


@dataclass(frozen=True)
class ProbeSettings:
    """How the probes are fitted. Part of probes.json: results are reused only for equal settings."""

    probe_train: int | None = 10000  # first N images of the train split (a random, class-balanced prefix)
    probe_test: int | None = None  # first N images of the test split; None: all of it
    seeds: tuple[int, ...] = (0, 1, 2)  # MLP probe seeds
    hidden: tuple[int, ...] = (256,)  # MLP hidden sizes
    mlp_epochs: int = 30
    mlp_batch: int = 256
    mlp_lr: float = 1e-3
    mlp_weight_decay: float = 1e-4
    linear_l2: float = 1e-4  # λ in mean CE + λ‖W‖²
    linear_max_iter: int = 200
    ks: tuple[int, ...] = (1, 5, 20, 100)
    knn_tau: float = 0.1
    knn_eta: float = 1e-3
    features: str = "z"  # the representation probed (a VQ-VAE's "z_q" is the other choice)
    seed_mlp: bool = False  # also the class-penalty study's classifier (seed_mlp_probe)
    seed_mlp_output: str = "linear"  # its output: linear logits, or the study's "sigmoid"
    version: int = PROBE_VERSION

    def __post_init__(self) -> None:
        for name in ("probe_train", "probe_test"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"{name} must be at least 2 images (or None for the whole split), got {value}")
        if not self.seeds:
            raise ValueError("the MLP probe needs at least one seed (e.g. seeds=(0, 1, 2))")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"k-NN needs k ≥ 1, got ks={self.ks}")
        if self.mlp_epochs < 1 or self.mlp_batch < 1:
            raise ValueError("mlp_epochs and mlp_batch must be at least 1")
        if not self.knn_tau > 0 or not 0 < self.knn_eta < 1:
            raise ValueError(f"need knn_tau > 0 and 0 < knn_eta < 1, got {self.knn_tau}, {self.knn_eta}")
        if self.seed_mlp_output not in ("linear", "sigmoid"):
            raise ValueError(f"seed_mlp_output must be linear or sigmoid, got {self.seed_mlp_output!r}")

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> ProbeSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in known.items()})


@dataclass
class LatentSet:
    """The representations of one split: z (n, d) float32 (a VAE's μ), log σ² (n, d) when the family has
    a posterior variance (else None), labels (n,) int64, and where the images came from: `index` (n,) =
    positions in the official `source` file ("train" or "test"), `digests` = one hash per image (to count
    byte-identical images across splits), split name and dataset."""

    z: torch.Tensor
    logvar: torch.Tensor | None
    labels: torch.Tensor
    split: str = ""
    source: str = ""
    index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    digests: list[str] = field(default_factory=list)
    dataset: str = ""
    features: str = "mu"  # what z is, as the results name it

    def __post_init__(self) -> None:
        n = self.z.shape[0]
        bad_logvar = self.logvar is not None and self.logvar.shape != self.z.shape
        if self.z.ndim != 2 or bad_logvar or self.labels.shape != (n,):
            got = None if self.logvar is None else tuple(self.logvar.shape)
            raise ValueError(f"LatentSet needs z (n, d), logvar (n, d) or None, and labels (n,); got "
                             f"{tuple(self.z.shape)}, {got}, {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.z.shape[0])


# ---------------------------------------------------------------------------------------------------
# The probes (tensors in, numbers out)


def _standardiser(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = train.mean(dim=0)
    std = train.std(dim=0).clamp_min(1e-6) if train.shape[0] > 1 else torch.ones_like(mean)
    return mean, std


def _scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy and mean cross-entropy (nats) of logits against labels."""
    return {"accuracy": float((logits.argmax(dim=1) == labels).float().mean().item()),
            "cross_entropy": float(F.cross_entropy(logits, labels).item())}


def _num_classes(train: LatentSet, test: LatentSet, num_classes: int | None) -> int:
    seen = int(max(train.labels.max().item(), test.labels.max().item() if len(test) else 0)) + 1
    classes = num_classes or seen
    if classes < 2 or seen > classes:
        raise ValueError(f"labels run to {seen - 1}, which does not fit {classes} classes")
    return classes


def mlp_probe(train: LatentSet, test: LatentSet, num_classes: int | None = None,
              settings: ProbeSettings | None = None) -> dict:
    """The reference study's probe: an MLP on z, and for a family with a posterior variance (a VAE) on
    samples z = μ + σ·ε (ε redrawn each epoch, one seeded sample per test image), as that study did.

    Inputs are standardised by the mean and std of the training z. Returns mean and std over
    `settings.seeds` of test accuracy and cross-entropy, and the per-seed values."""
    s = settings or ProbeSettings()
    sampled = train.logvar is not None and test.logvar is not None
    return {"features": "z = mu + sigma * eps" if sampled else "z", "hidden": list(s.hidden), "epochs": s.mlp_epochs,
            "batch": s.mlp_batch, "lr": s.mlp_lr, "weight_decay": s.mlp_weight_decay,
            **_fit_mlp(train, test, num_classes, s, s.hidden, sampled=sampled)}


SEED_MLP_HIDDEN = (100, 200, 100)  # the class-penalty study's classifier: b -> 100 -> 200 -> 100 -> classes


def seed_mlp_probe(train: LatentSet, test: LatentSet, num_classes: int | None = None,
                   settings: ProbeSettings | None = None) -> dict:
    """The class-penalty study's classifier on z: hidden layers 100, 200, 100 with ReLU and dropout 0.1;
    linear logits by default, or the study's sigmoid output (`settings.seed_mlp_output`). Same training
    as the MLP probe (AdamW, epochs, batches, seeds)."""
    s = settings or ProbeSettings()
    return {"features": "z", "hidden": list(SEED_MLP_HIDDEN), "activation": "relu", "dropout": 0.1,
            "output": s.seed_mlp_output, "epochs": s.mlp_epochs, "batch": s.mlp_batch, "lr": s.mlp_lr,
            **_fit_mlp(train, test, num_classes, s, SEED_MLP_HIDDEN, sampled=False, activation="relu", dropout=0.1,
                       output=s.seed_mlp_output)}


def _fit_mlp(train: LatentSet, test: LatentSet, num_classes: int | None, s: ProbeSettings, hidden: tuple[int, ...],
             *, sampled: bool, activation: str = "silu", dropout: float = 0.0, output: str = "linear") -> dict:
    """Fit an MLP classifier per seed on standardised z (on samples z = μ + σε when `sampled`) and score it
    on the test set: per-seed and mean ± std test accuracy and cross-entropy."""
    classes = _num_classes(train, test, num_classes)
    mean, std = _standardiser(train.z)
    train_sigma = torch.exp(0.5 * train.logvar) if sampled else None
    test_sigma = torch.exp(0.5 * test.logvar) if sampled else None
    n = len(train)
    per_seed = []
    for seed in s.seeds:
        gen = torch.Generator().manual_seed(int(seed))
        torch.manual_seed(int(seed))  # the classifier's initialisation
        model = MLPClassifier(train.z.shape[1], classes, hidden, dropout, activation, output)
        opt = torch.optim.AdamW(model.parameters(), lr=s.mlp_lr, weight_decay=s.mlp_weight_decay)
        model.train()
        for _ in range(s.mlp_epochs):
            z = train.z + train_sigma * torch.randn(train.z.shape, generator=gen) if sampled else train.z
            z = (z - mean) / std
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, s.mlp_batch):
                idx = order[start : start + s.mlp_batch]
                loss = F.cross_entropy(model(z[idx]), train.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            z_test = test.z + test_sigma * torch.randn(test.z.shape, generator=gen) if sampled else test.z
            per_seed.append({"seed": int(seed), **_scores(model((z_test - mean) / std), test.labels)})
    return _over_seeds(per_seed)


def _over_seeds(per_seed: list[dict]) -> dict:
    out: dict = {"per_seed": per_seed}
    for key in ("accuracy", "cross_entropy"):
        values = torch.tensor([r[key] for r in per_seed], dtype=torch.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std()) if len(values) > 1 else 0.0
    return out


def linear_probe(train: LatentSet, test: LatentSet, num_classes: int | None = None,
                 settings: ProbeSettings | None = None) -> dict:
    """Multinomial logistic regression on standardised μ: minimise mean CE + λ‖W‖² by L-BFGS from zero."""
    s = settings or ProbeSettings()
    classes = _num_classes(train, test, num_classes)
    mean, std = _standardiser(train.z)
    x, x_test = ((train.z - mean) / std).double(), ((test.z - mean) / std).double()
    weight = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=s.linear_max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, train.labels) + s.linear_l2 * weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        scores = _scores(x_test @ weight + bias, test.labels)
    return {"features": f"{train.features} (standardised)", "l2": s.linear_l2, "seed": None, **scores}


def _knn_scores(query: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, one_hot: torch.Tensor,
                ks: list[int], s: ProbeSettings, chunk: int, leave_out: bool) -> dict[str, dict[str, float]]:
    """Accuracy and cross-entropy of the exp(s/τ)-weighted cosine vote of the k nearest bank rows, for
    every k. leave_out: the query is the bank itself, and each row's own entry is left out of its vote."""
    classes = one_hot.shape[1]
    correct = dict.fromkeys(ks, 0.0)
    nll = dict.fromkeys(ks, 0.0)
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk]
        y = labels[start : start + chunk]
        sims = q @ bank.T
        if leave_out:
            sims[torch.arange(len(q)), torch.arange(start, start + len(q))] = -math.inf
        top = min(ks[-1], len(bank) - leave_out)  # left out, a row has one neighbour fewer to draw on
        sims, idx = sims.topk(top, dim=1)  # sorted, most similar first
        weights = torch.exp((sims - 1.0) / s.knn_tau)  # shifted by the largest possible s: same ratios
        for k in ks:
            votes = torch.einsum("qk,qkc->qc", weights[:, :k], one_hot[idx[:, :k]])  # k > top: all of them
            prob = (1 - s.knn_eta) * votes / votes.sum(dim=1, keepdim=True) + s.knn_eta / classes
            correct[k] += float((prob.argmax(dim=1) == y).sum())
            nll[k] += float(-prob.gather(1, y[:, None]).log().sum())
    n = max(1, len(query))
    return {str(k): {"accuracy": correct[k] / n, "cross_entropy": nll[k] / n} for k in ks}


def knn_probe(train: LatentSet, test: LatentSet, num_classes: int | None = None,
              settings: ProbeSettings | None = None, *, chunk: int = 1024) -> dict:
    """Cosine k-NN on μ with exp(s/τ)-weighted votes, for every k in `settings.ks` (see the module doc).

    The reported k is chosen by leave-one-out accuracy on the probe-training set, never on the test
    set; the test scores of every k are kept in "by_k"."""
    s = settings or ProbeSettings()
    classes = _num_classes(train, test, num_classes)
    ks = sorted({min(int(k), len(train)) for k in s.ks})
    bank = F.normalize(train.z.float(), dim=1)
    one_hot = F.one_hot(train.labels, classes).float()
    loo = _knn_scores(bank, train.labels, bank, one_hot, ks, s, chunk, leave_out=True)
    by_k = _knn_scores(F.normalize(test.z.float(), dim=1), test.labels, bank, one_hot, ks, s, chunk,
                       leave_out=False)
    best = max(ks, key=lambda k: (loo[str(k)]["accuracy"], -k))
    return {"features": train.features, "metric": "cosine", "tau": s.knn_tau, "eta": s.knn_eta, "seed": None,
            "k_chosen_by": "leave-one-out accuracy on the probe-training set",
            "train_loo_by_k": loo, "by_k": by_k, "best_k": best, **by_k[str(best)]}


def split_check(train: LatentSet, test: LatentSet) -> dict:
    """How the probe's train and test images relate: both named, their overlap (must be 0) and the test
    images byte-identical to some training image (duplicates inside the dataset itself)."""
    overlap = 0
    if train.source and train.source == test.source:
        overlap = len(set(train.index.tolist()) & set(test.index.tolist()))
    if overlap:
        raise ValueError(f"{overlap} images are in both the probe's train ({train.split}) and test ({test.split}) "
                         f"sets: the probe would be scored on images it was fitted on; use disjoint splits")
    duplicates = len(set(test.digests) & set(train.digests)) if train.digests and test.digests else None
    return {"dataset": train.dataset or test.dataset,
            "train": {"split": train.split, "source": train.source, "n": len(train)},
            "test": {"split": test.split, "source": test.source, "n": len(test)},
            "overlap": overlap, "test_images_identical_to_a_train_image": duplicates}


def probe_latents(train: LatentSet, test: LatentSet, num_classes: int | None = None,
                  settings: ProbeSettings | None = None) -> dict:
    """All three probes on given latents: {"split", "probes": {"mlp", "linear", "knn"}, "seconds"}."""
    s = settings or ProbeSettings()
    check = split_check(train, test)
    started = time.perf_counter()
    probes = {"mlp": mlp_probe(train, test, num_classes, s), "linear": linear_probe(train, test, num_classes, s),
              "knn": knn_probe(train, test, num_classes, s)}
    if s.seed_mlp:
        probes["seed_mlp"] = seed_mlp_probe(train, test, num_classes, s)
    return {"split": check, "probes": probes, "seconds": round(time.perf_counter() - started, 3)}


# ---------------------------------------------------------------------------------------------------
# Probing a run


def _source(dataset: str, split: str) -> str:
    from core.datasets import dataset_info

    return "test" if split == "test" and dataset_info(dataset).official_test else "train"


def encode_split(objective: torch.nn.Module, family: Any, dataset: str, split: str, limit: int | None = None,
                 features: str = "z") -> LatentSet:
    """Load `split` of `dataset` (first `limit` images) and embed it with a trained `objective` of `family`:
    the representation `features` (and log σ² with a VAE's z) on the CPU."""
    from core.datasets import load_split

    images = load_split(dataset, split, limit=limit)
    emb = family.embed(objective, images.images)
    if features not in emb:
        raise ValueError(f"the {family.title} has no representation {features!r}; it has "
                         f"{', '.join(r.key for r in family.representations)}")
    logvar = emb.get("logvar") if features == "z" else None
    digests = [hashlib.blake2b(row.numpy().tobytes(), digest_size=12).hexdigest()
               for row in images.images.reshape(len(images), -1)]
    name = next((r.title for r in family.representations if r.key == features), features)
    return LatentSet(emb[features], logvar, images.labels.cpu(), split, _source(dataset, split), images.index.cpu(),
                     digests, dataset, "mu" if name == "μ" else name)


def _run_step(run) -> int | None:
    step = run.status().get("step")
    return int(step) if isinstance(step, int) else None


def well_formed(results: object, *, saved: bool = True) -> bool:
    """Whether probe results have the shape this module writes: {"probes": {name: {"accuracy": number,
    "cross_entropy": number, ...}}}, plus "settings" when saved. A damaged probes.json is not, and is redone."""
    if not isinstance(results, dict) or (saved and not isinstance(results.get("settings"), dict)):
        return False
    probes = results.get("probes")
    if not isinstance(probes, dict) or not probes:
        return False
    for entry in probes.values():
        if not isinstance(entry, dict):
            return False
        for key in ("accuracy", "cross_entropy"):
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
    return True


def cached(run, settings: ProbeSettings | None = None) -> dict | None:
    """The run's saved probe results if they were made with `settings` on its current weights, else None
    (also when probes.json is damaged: the probes are then fitted again)."""
    saved = run.probes()
    if not well_formed(saved):
        return None
    try:
        same = ProbeSettings.from_json(saved["settings"]) == (settings or ProbeSettings())
    except (TypeError, ValueError, AttributeError):
        return None
    return saved if same and saved.get("model_step") == _run_step(run) else None


def probe_run(run, settings: ProbeSettings | None = None, *, force: bool = False, save: bool = True) -> dict:
    """Probe a finished run: reuse its probes.json when still valid, else encode the train and test splits
    with its model, fit the probes and save the results with the run (unless `save` is False)."""
    from core.datasets import dataset_info

    s = settings or ProbeSettings()
    if not force and (hit := cached(run, s)) is not None:
        return hit
    state = run.status().get("state")
    if state != "finished":
        raise ValueError(f"run {run.run_id} is {state!r}; probes need a finished run (finish it with "
                         f"python -m core.train --resume {run.path})")
    from core.families import family_of, load_objective

    started = time.perf_counter()
    dataset = run.config["dataset"]
    family = family_of(run.config)
    objective = load_objective(run)
    train = encode_split(objective, family, dataset, "train", s.probe_train, s.features)
    test = encode_split(objective, family, dataset, "test", s.probe_test, s.features)
    encode_s = time.perf_counter() - started
    results = probe_latents(train, test, dataset_info(dataset).num_classes, s)
    from core.runs import now_iso

    results = {"format": "robust-loss-lab/probes", "settings": s.to_json(), "run_id": run.run_id,
               "model_step": _run_step(run), "created": now_iso(), "encode_seconds": round(encode_s, 3),
               "torch_threads": torch.get_num_threads(), **results}
    if save:
        run.save_probes(results)
    return results


def summary(results: dict | None) -> dict[str, float | None]:
    """The flat numbers of a probes.json (what tables show): mlp/linear/knn accuracy and cross-entropy,
    the MLP's standard deviations over seeds, and the k-NN's best k."""
    keys = ("mlp_acc", "mlp_acc_std", "mlp_ce", "mlp_ce_std", "linear_acc", "linear_ce", "knn_acc", "knn_ce",
            "knn_k", "seed_mlp_acc", "seed_mlp_ce")
    out: dict[str, float | None] = dict.fromkeys(keys)
    if not well_formed(results, saved=False):
        return out
    probes = results["probes"]  # type: ignore[index]
    if mlp := probes.get("mlp"):
        out.update(mlp_acc=mlp["accuracy"], mlp_acc_std=mlp.get("accuracy_std"), mlp_ce=mlp["cross_entropy"],
                   mlp_ce_std=mlp.get("cross_entropy_std"))
    if linear := probes.get("linear"):
        out.update(linear_acc=linear["accuracy"], linear_ce=linear["cross_entropy"])
    if knn := probes.get("knn"):
        out.update(knn_acc=knn["accuracy"], knn_ce=knn["cross_entropy"], knn_k=knn.get("best_k"))
    if seed := probes.get("seed_mlp"):
        out.update(seed_mlp_acc=seed["accuracy"], seed_mlp_ce=seed["cross_entropy"])
    return out


# ---------------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m core.probes RUN_DIR [RUN_DIR ...]`: probe finished runs and print their numbers."""
    from core.cli import comma_list, threads
    from core.device import configure_threads

    p = argparse.ArgumentParser(prog="python -m core.probes", description="Probe finished runs' latents "
                                "(fitted on the train split, scored on the test split); saves probes.json.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--probe-train", type=int, default=ProbeSettings.probe_train, metavar="N",
                   help="probe-training images from the train split (0: all)")
    p.add_argument("--probe-test", type=int, default=0, metavar="N", help="test images (0: all)")
    p.add_argument("--seeds", type=comma_list(int), default=list(ProbeSettings.seeds),
                   help="MLP probe seeds, e.g. 0,1,2")
    p.add_argument("--force", action="store_true", help="recompute even if saved results are valid")
    p.add_argument("--threads", type=threads, default=None, help="CPU threads for torch")
    args = p.parse_args(argv)
    from core.runs import RunFormatError, open_run

    configure_threads(args.threads)
    try:
        settings = ProbeSettings(probe_train=args.probe_train or None, probe_test=args.probe_test or None,
                                 seeds=tuple(args.seeds))
    except ValueError as exc:
        print(f"core.probes: {exc}", file=sys.stderr)
        return 2
    status = 0
    for path in args.runs:
        try:
            run = open_run(path)
            numbers = summary(probe_run(run, settings, force=args.force, save=not run.shipped))
        except (RunFormatError, ValueError, OSError) as exc:
            print(f"core.probes: {path}: {exc}", file=sys.stderr)
            status = 2
            continue
        shown = "  ".join(f"{k} {v:.4f}" for k, v in numbers.items() if isinstance(v, float) and math.isfinite(v))
        print(f"{run.run_id}  {shown}", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
