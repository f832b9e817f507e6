"""What the Train page shows, free of Streamlit: the new-run form, read and checked, and a run's progress,
numbers, curves and row, as plain values the page only draws.

The form comes from the fields' declarations (`core.config.fields_for(family)`: the common fields, the
reconstruction loss's and the family's own). A field shows when it `applies_to` the values on screen (α
only for the general loss, ν for Student's t, no c for MSE and L1, the α bounds for the adaptive loss);
advanced fields go in a group of their own. Numbers are typed as text, so what the page reads is exactly
what is on screen:

    form_groups(family, values)  -> [FormGroup(title, caption, widgets, advanced)]
    read_form(family, values, datasets_found=..., cuda=...)
                                 -> FormResult(config | None, errors, summary)

`values` maps each widget's session key to what the widget holds (text for numbers). `read_form` parses
each shown field, checks it (`Field.check`), then the whole (`core.config.normalize_config`), and names
each problem by the field's label; `config` is None unless every check passed, and is then exactly the
values shown, which `core.jobs.start` receives.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core import datasets
from core.commands import fix_steps, split_message
from core.config import COMMON_FIELDS, fields_for, normalize_config
from core.families import FAMILIES, Family, family_of, get_family
from core.families.recon import loss_label
from core.fields import ConfigError, Field
from core.losses import LOSSES
from core.progress import Progress, curves, format_eta
from core.runs import open_run

__all__ = [
    "FAMILY_KEY",
    "STATE_ICONS",
    "FieldError",
    "FormGroup",
    "FormResult",
    "FormWidget",
    "ago",
    "curve_figures",
    "data_on_disk",
    "default_values",
    "delete_run",
    "family_choices",
    "form_groups",
    "format_number",
    "humanise",
    "message_parts",
    "metrics",
    "phase_bar",
    "read_form",
    "resume_run",
    "run_caption",
    "status_line",
    "stop_run",
    "table_rows",
    "widget_key",
]

FAMILY_KEY = "train_family"
KEY_PREFIX = "train_f_"
# Streamlit's Material icons (its own font: no emoji font needed), for the progress lines.
STATE_ICONS = {"starting": ":material/hourglass_top:", "running": ":material/play_circle:",
               "stopping": ":material/stop_circle:", "finished": ":material/check_circle:",
               "stopped": ":material/pause_circle:", "interrupted": ":material/warning:", "failed": ":material/error:",
               "launch failed": ":material/error:", "created": ":material/fiber_new:", "broken": ":material/block:"}

# How the device (a text field, offered as the choices it accepts) reads in the form; a choice field's
# titles are declared with the field (Field.titles).
_DEVICE_TITLES = {"auto": "auto (a GPU when there is one)", "cpu": "CPU", "cuda": "GPU (cuda)"}
_OPTIMIZER = next(f for f in COMMON_FIELDS if f.name == "optimizer")


def _short_title(dataset: str) -> str:
    """"Fashion-MNIST" for "Fashion-MNIST (28×28)": a dataset's title without its size note."""
    try:
        return datasets.dataset_info(dataset).title.split(" (")[0]
    except (KeyError, ValueError):
        return str(dataset)


# ---------------------------------------------------------------------------------------------------
# The form


@dataclass(frozen=True)
class FormWidget:
    """One widget of the form: "text" (numbers and text, typed), "select" or "check"."""

    field: Field
    key: str
    kind: str
    options: tuple[Any, ...] = ()
    option_titles: Mapping[Any, str] = field(default_factory=dict)
    placeholder: str = ""
    help: str = ""

    @property
    def label(self) -> str:
        return self.field.label

    def title_of(self, value: Any) -> str:
        return self.option_titles.get(value, str(value))


@dataclass(frozen=True)
class FormGroup:
    title: str
    caption: str
    widgets: tuple[FormWidget, ...]
    advanced: bool = False


@dataclass(frozen=True)
class FieldError:
    """A problem with the form: the field (None: the combination), its label and what is wrong, and
    commands that fix it (a dataset's download, say)."""

    field: str | None
    label: str
    message: str
    commands: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return self.message


@dataclass
class FormResult:
    config: dict | None  # what core.jobs.start receives: exactly the values shown, or None when invalid
    errors: list[FieldError]
    summary: str = ""  # what will be trained, once the form is valid
    normalized: dict | None = None

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.errors


def family_choices() -> list[str]:
    """Every registered family, by name, in registry order."""
    return list(FAMILIES)


def widget_key(family: Family | str, f: Field) -> str:
    """The session key of a field's widget: shared by all families for the common and loss fields, the
    family's own for its fields (so each family keeps its values)."""
    fam = get_family(family) if isinstance(family, str) else family
    own = any(f is g for g in fam.fields)
    return f"{KEY_PREFIX}{fam.name}_{f.name}" if own else f"{KEY_PREFIX}{f.name}"


def _format_value(value: Any) -> str:
    """A field's value as typed text: "20", "0.001", "1e-05"; "" for None."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _bounds(f: Field) -> str:
    """"Allowed: 1 to 1,000,000." from the field's bounds ("" when it has none)."""
    def num(v: float) -> str:
        if float(v).is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:g}"

    if f.lo is None and f.hi is None:
        return ""
    if f.lo is not None and f.hi is not None and not f.strict_lo:
        return f"Allowed: {num(f.lo)} to {num(f.hi)}."
    parts = []
    if f.lo is not None:
        parts.append(f"above {num(f.lo)}" if f.strict_lo else f"at least {num(f.lo)}")
    if f.hi is not None:
        parts.append(f"at most {num(f.hi)}")
    return "Allowed: " + ", ".join(parts) + "."


def _placeholder(f: Field) -> str:
    """What an empty optional field means, from its help ("empty: all" -> "all")."""
    if not f.optional:
        return ""
    match = re.search(r"empty: ([^;)]+)", f.help)
    if match and len(match.group(1)) <= 28:
        return f"empty: {match.group(1).strip()}"
    return "optional"


def _help(f: Field, family: Family) -> str:
    text = f.help[:1].upper() + f.help[1:] if f.help else ""
    if text and not text.endswith("."):
        text += "."
    if f.name == "optimizer":
        text = f"Empty: the family's own ({_OPTIMIZER.title_of(family.default_optimizer)})."
    if f.kind in ("int", "float"):
        text = " ".join(p for p in (text, _bounds(f)) if p)
    return text


def _widget(family: Family, f: Field, cuda_devices: int = 0) -> FormWidget:
    key, help_text = widget_key(family, f), _help(f, family)
    if f.kind == "choice":
        options = ((None,) if f.optional else ()) + tuple(f.choices)
        titles: dict[Any, str] = dict(f.titles)
        if f.name == "loss":
            titles = {name: info.title for name, info in LOSSES.items()}
        elif f.name == "dataset":
            titles = {name: datasets.dataset_info(name).title for name in f.choices}
        if f.optional:
            titles[None] = (f"the family's own ({_OPTIMIZER.title_of(family.default_optimizer)})"
                            if f.name == "optimizer" else "default")
        return FormWidget(f, key, "select", options, titles, help=help_text)
    if f.kind == "bool":
        return FormWidget(f, key, "check", help=help_text)
    if f.name == "device":  # a text field of the declarations, offered as the choices it accepts
        options = ("auto", "cpu", "cuda", *(f"cuda:{i}" for i in range(cuda_devices if cuda_devices > 1 else 0)))
        return FormWidget(f, key, "select", options, _DEVICE_TITLES, help=help_text)
    return FormWidget(f, key, "text", placeholder=_placeholder(f), help=help_text)


def default_values(family: str) -> dict[str, Any]:
    """Each widget's starting value (what its field declares), by session key: text for typed fields."""
    fam = get_family(family)
    out: dict[str, Any] = {}
    for f in fields_for(fam):
        if f.name == "family":
            continue
        w = _widget(fam, f)
        out[w.key] = f.default if w.kind in ("select", "check") else _format_value(f.default)
    return out


def _on_screen(family: Family, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every field's value as shown, parsed where it parses (else its default): what `Field.applies` looks
    at (the loss, above all)."""
    out: dict[str, Any] = {"family": family.name}
    for f in fields_for(family):
        if f.name == "family":
            continue
        try:
            out[f.name] = _parse(f, values.get(widget_key(family, f), f.default))
        except ConfigError:
            out[f.name] = f.default
    return out


def form_groups(family: str, values: Mapping[str, Any], *, cuda_devices: int = 0,
                datasets_found: Mapping[str, bool] | None = None) -> list[FormGroup]:
    """The form's widgets for `family`, given what the choice widgets hold now: the fields that apply,
    grouped (training, the reconstruction loss, the family's own; advanced ones last, apart).
    datasets_found: name -> on disk; a dataset that is not reads "… — not on disk"."""
    fam = get_family(family)
    shown = _on_screen(fam, values)
    own = {f.name for f in fam.fields}
    loss_names = {f.name for f in fields_for(fam)} - own - {f.name for f in COMMON_FIELDS}
    groups: dict[str, list[FormWidget]] = {"training": [], "loss": [], "family": [], "advanced": []}
    for f in fields_for(fam):
        if f.name == "family" or not f.applies_to(shown):
            continue
        w = _widget(fam, f, cuda_devices)
        if f.name == "dataset" and datasets_found:
            titles = {n: t + ("" if datasets_found.get(n, True) else " — not on disk")
                      for n, t in w.option_titles.items()}
            w = FormWidget(f, w.key, w.kind, w.options, titles, w.placeholder, w.help)
        where = "advanced" if f.advanced else "loss" if f.name in loss_names else "family" if f.name in own else \
            "training"
        groups[where].append(w)
    loss = shown.get("loss")
    loss_caption = humanise(LOSSES[loss].description) if loss in LOSSES else ""
    out = [FormGroup("Data and training", "", tuple(groups["training"]))]
    if groups["loss"]:
        out.append(FormGroup("Loss", loss_caption, tuple(groups["loss"])))
    out.append(FormGroup(fam.title, "", tuple(groups["family"])))
    if groups["advanced"]:
        out.append(FormGroup("Advanced settings", "", tuple(groups["advanced"]), advanced=True))
    return out


def _parse(f: Field, text: Any) -> Any:
    """A typed value as the field's type; ConfigError (naming the field) when it is not one."""
    if f.kind not in ("int", "float") and f.kind != "str":
        return text
    raw = "" if text is None else str(text).strip()
    if raw == "":
        if f.optional:
            return None
        raise ConfigError(f"{f.name} needs a value", f.name)
    if f.kind == "str":
        return raw
    cleaned = raw.replace("−", "-").replace("_", "")
    if f.kind == "int":
        try:
            return int(cleaned)
        except ValueError:
            pass
        try:
            number = float(cleaned)
        except ValueError:
            raise ConfigError(f"{f.name} must be a whole number, got “{raw}”", f.name) from None
        if not math.isfinite(number) or not number.is_integer():
            raise ConfigError(f"{f.name} must be a whole number, got “{raw}”", f.name)
        return int(number)
    try:
        number = float(cleaned)
    except ValueError:
        raise ConfigError(f"{f.name} must be a number, got “{raw}”", f.name) from None
    if not math.isfinite(number):
        raise ConfigError(f"{f.name} must be a finite number, got “{raw}”", f.name)
    return number


def _labels(family: Family) -> dict[str, str]:
    return {f.name: f.label for f in fields_for(family)}


def humanise(text: str, labels: Mapping[str, str] | None = None) -> str:
    """A message in the words of the form: field names and flags become labels ("Learning rate", not
    `lr` or `--lr`), 1e+06 reads 1e6, and the trainer's signal names read as what the user did."""
    labels = labels or {}
    out = re.sub(r"\s*\((--[a-z][a-z-]*)\)", "", text)  # "(--lr)" after the words it names
    out = re.sub(r"\((--[a-z][a-z-]*);\s*", "(", out)  # "(--loss-alpha; e.g. 1.0)"
    for name, label in sorted(labels.items(), key=lambda kv: -len(kv[0])):
        flag = "--" + name.replace("_", "-")
        inner = label[:1].lower() + label[1:] if label[1:2].islower() else label  # mid-sentence
        out = re.sub(rf"(?<=\S ){re.escape(flag)}\b", inner, out).replace(flag, label)
        if "_" in name or name == "lr":
            out = re.sub(rf"^{re.escape(name)}\b", label, out)
            out = re.sub(rf"\b{re.escape(name)}\b", inner, out)
    out = re.sub(r"(\d)e\+0*(\d)", r"\1e\2", out)
    out = re.sub(r"(\d)e-0+(\d)", r"\1e-\2", out)
    out = re.sub(r"\bval loss\b", "validation loss", out)
    out = out.replace("stopped by SIGTERM", "stopped").replace("stopped by SIGINT", "stopped by Ctrl-C")
    out = re.sub(r"\s*\(alpha= sets ν[^)]*\)", "", out)  # the loss registry's note for the command line
    return out


def _field_error(exc: ConfigError, family: Family) -> FieldError:
    labels = _labels(family)
    message = exc.naming(labels)
    return FieldError(exc.field, labels.get(exc.field or "", ""), humanise(message, labels))


def read_form(family: str, values: Mapping[str, Any], *, datasets_found: Mapping[str, bool] | None = None,
              cuda: bool = False, dataset_fixes: Mapping[str, Sequence[str]] | None = None) -> FormResult:
    """Read the form: every shown field parsed and checked, then the whole config, each problem named by
    the field's label. datasets_found: name -> on disk (a missing dataset is an error, with its fix
    commands from dataset_fixes); cuda: whether a GPU is visible (a cuda device without one is an error)."""
    fam = get_family(family)
    errors: list[FieldError] = []
    config: dict[str, Any] = {"family": fam.name}
    shown = [w for group in form_groups(family, values) for w in group.widgets]
    for w in shown:
        try:
            value = _parse(w.field, values.get(w.key, w.field.default))
            config[w.field.name] = w.field.check(value)
        except ConfigError as exc:
            errors.append(_field_error(exc, fam))
    dataset = config.get("dataset")
    if datasets_found is not None and dataset is not None and not datasets_found.get(dataset, True):
        errors.append(FieldError("dataset", "Dataset", f"{datasets.dataset_info(dataset).title} is not on disk, so "
                                 f"it cannot be trained on yet", tuple((dataset_fixes or {}).get(dataset, ()))))
    if str(config.get("device", "")).startswith("cuda") and not cuda:
        errors.append(FieldError("device", "Device", "PyTorch sees no GPU here: choose auto or CPU"))
    if errors:
        return FormResult(None, errors)
    try:
        cfg = normalize_config(config)
    except ConfigError as exc:
        return FormResult(None, [_field_error(exc, fam)])
    return FormResult(config, [], _summary(fam, cfg), cfg)


def _summary(family: Family, cfg: dict) -> str:
    """What the form will train, in one line."""
    split = cfg["split"]
    steps = math.ceil(split["train"] / cfg["batch_size"])
    latent = family.latent_size(cfg)
    return (f"{family.describe(cfg)}, latent size {latent:,}, {loss_label(cfg)} loss, on "
            f"{_short_title(cfg['dataset'])}: {split['train']:,} training images (validated on {split['val']:,}), "
            f"{cfg['epochs']:,} epoch{'s' if cfg['epochs'] != 1 else ''} of {steps:,} step{'s' if steps != 1 else ''}")


def data_on_disk() -> tuple[dict[str, bool], dict[str, tuple[str, ...]]]:
    """(dataset -> on disk, dataset -> the pasteable commands that fetch it), for `read_form`."""
    statuses = datasets.dataset_status()
    return ({s["name"]: bool(s["found"]) for s in statuses},
            {s["name"]: tuple(step.command for step in fix_steps(str(s["fix"])) if step.command) for s in statuses})


# ---------------------------------------------------------------------------------------------------
# Actions on a run: each returns what its message needs, or raises with why not (core.jobs' JobError)


def stop_run(path: str) -> tuple[str]:
    """Ask the run's trainer to stop (it checkpoints first); (run id,). ValueError when it was not training."""
    from core.jobs import stop

    if not stop(path):
        raise ValueError("it was not training")
    return (open_run(path).run_id,)


def resume_run(path: str) -> tuple[str]:
    from core.jobs import resume

    resume(path)
    return (open_run(path).run_id,)


def delete_run(path: str) -> tuple[str]:
    from core.jobs import delete

    run_id = open_run(path).run_id
    delete(path)
    return (run_id,)


# ---------------------------------------------------------------------------------------------------
# A run: its line, its phase, its message, its numbers, its curves


def format_number(value: Any) -> str:
    """A number for people: "—" when missing, ints with thousands separators, floats to 4 digits without
    exponents in the everyday range."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None or isinstance(value, bool) else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return "—"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def status_line(p: Progress) -> str:
    """"▶️ running · epoch 5/20 · step 6 of 10 · ETA 1:05 · 8,400 images/s" (the phase when not training)."""
    state = p.state if not p.training or p.phase in ("", "training") else f"{p.state}: {p.phase}"
    parts = [f"{STATE_ICONS.get(p.state, '')} {state}".strip(), p.epoch_label]
    if p.in_epoch_step:
        parts.append(p.in_epoch_step)
    if p.training:
        parts.append(f"ETA {format_eta(p.eta_s)}")
        if p.images_per_s:
            parts.append(f"{p.images_per_s:,.0f} images/s")
    return " · ".join(parts)


def phase_bar(p: Progress) -> tuple[str, float] | None:
    """(text, fraction) of the phase under way when it is not training: validating or writing embeddings."""
    if not p.training or p.phase not in ("validating", "writing embeddings"):
        return None
    fraction = p.phase_fraction or 0.0
    count = (f": {p.phase_done:,} of {p.phase_total:,} validation images" if p.phase_total else "")
    what = f"epoch {p.current_epoch}" if p.phase == "validating" else "the finished model"
    return f"{p.phase.capitalize()} ({what}){count}", float(fraction)


def message_parts(p: Progress | str, family: Family | None = None) -> tuple[str, str | None]:
    """A run's message as (prose in the form's words, pasteable command or None)."""
    text = p if isinstance(p, str) else p.message
    if not isinstance(p, str) and p.training and re.fullmatch(r"epoch \d+/\d+ done", text):
        text = ""  # the status line says where it is; a warning after it is shown on its own
    prose, command = split_message(text)
    labels = _labels(family) if family is not None else _labels(get_family("vae"))
    if command and prose and not prose.rstrip().endswith((".", ":")):
        prose += "; to continue from a terminal:" if "--resume" in command else "; from a terminal:"
    return humanise(prose, labels), command


def run_caption(run: Any, p: Progress | None = None) -> str:
    """"Digits · VQ-VAE (K=512, 2×2×4, 36 bits) · Cauchy · latent 16 · cpu"."""
    cfg = run.config
    family = family_of(cfg)
    parts = [_short_title(cfg.get("dataset", "")), family.describe(cfg), loss_label(cfg),
             f"latent size {family.latent_size(cfg):,}"]
    device = (p.device if p is not None else None) or cfg.get("device")
    if device:
        parts.append(str(device))
    return " · ".join(parts)


def ago(age: str) -> str:
    """core.progress.format_age's "5 min" as "5 min ago" ("just now" stays)."""
    return f"{age} ago" if age[:1].isdigit() else age


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def metrics(run: Any, p: Progress) -> list[tuple[str, str]]:
    """(label, value) for a run's numbers now: training and validation loss, each term, and the family's
    epoch metrics (active units, codes used, learned α and c)."""
    family = family_of(run.config)
    out = [("Training loss", format_number(p.loss)), ("Validation loss", format_number(p.val_loss))]
    for term in family.active_terms(run.config):
        out.append((_sentence(term.title), format_number(p.terms.get(term.name))))
    last = p.last_epoch
    for key, title in (("active_units", "Active units"), ("codes_used", "Codes used (epoch)"),
                       ("val_codes_used", "Codes used (validation)")):
        if isinstance(last.get(key), (int, float)):
            out.append((title, format_number(last[key])))
    if isinstance(last.get("alpha_mean"), (int, float)):
        out += [("Mean learned α", format_number(last["alpha_mean"])),
                ("Mean learned c", format_number(last.get("scale_mean")))]
    return out


_METRIC_TITLES = {"active_units": "active latent units", "codes_used": "codes used", "alpha_mean": "mean α",
                  "scale_mean": "mean c", "elbo": "ELBO", "bpd": "bits per dimension", "nll": "NLL", "kl": "KL"}
_COLOURS = {"training": "#4e79a7", "batch": "#4e79a7", "validation": "#e15759", "epoch": "#59a14f"}


def _line(name: str, x: list, y: list, *, markers: bool = False, axis: str | None = None) -> dict:
    trace = {"type": "scatter", "mode": "lines+markers" if markers else "lines", "name": name, "x": x, "y": y,
             "line": {"color": _COLOURS.get(name, "#76b7b2" if axis else "#4e79a7")}}
    if axis:
        trace["yaxis"] = axis
    return trace


def _loss_title(family: Family, config: dict) -> str:
    """"loss per image = reconstruction + 1·KL": the training loss as the family weighs its terms."""
    titles = {t.name: t.title for t in family.terms}
    parts = []
    for name, weight in family.loss_weights(config).items():
        title = titles.get(name, name)
        parts.append(title if weight == 1 else f"{weight:g}·{title}")
    return "Loss per image = " + " + ".join(parts)


def curve_figures(run: Any, *, height: int = 260) -> list[tuple[str, dict]]:
    """(key, {"data", "layout"}) for each chart of a run's curves: the training loss, every term the
    family logs (training steps and validation per epoch), and the other numbers of the epoch records."""
    c = curves(run)
    steps, epochs = c["steps"], c["epochs"]
    family = family_of(run.config)

    n_epochs = int(run.config.get("epochs") or 1)

    def figure(title: str, traces: list[dict], **layout: Any) -> dict:
        # The legend sits above the plot, right of nothing but the title's line: clear of ticks and title.
        base = {"height": height, "margin": {"l": 10, "r": 10, "t": 70, "b": 40},
                "title": {"text": title, "font": {"size": 14}, "x": 0, "xanchor": "left", "y": 0.97,
                          "yanchor": "top"},
                "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
                "showlegend": len(traces) > 1,
                "xaxis": {"title": {"text": "epoch"}, "automargin": True, "tick0": 0,
                          "dtick": max(1, math.ceil(n_epochs / 8))},
                "yaxis": {"automargin": True}}
        return {"data": traces, "layout": {**base, **layout}}

    charts: list[tuple[str, dict]] = []
    used = {"x", "loss", "val_loss", "epoch"}
    traces = []
    if "loss" in steps:
        traces.append(_line("training", steps["x"], steps["loss"]))
    if "val_loss" in epochs:
        traces.append(_line("validation", epochs["x"], epochs["val_loss"], markers=True))
    if traces:
        charts.append(("loss", figure(_loss_title(family, run.config), traces)))
    for term in family.active_terms(run.config):
        traces = []
        if term.name in steps:  # a batch statistic (a code perplexity) is named so: it differs from the epoch's
            traces.append(_line("training" if term.per_example else "batch", steps["x"], steps[term.name]))
        for key, name in ((f"{term.name}_epoch", "epoch"), (f"val_{term.name}", "validation")):
            if key in epochs:
                traces.append(_line(name, epochs["x"], epochs[key], markers=True))
                used.add(key)
        used.add(term.name)
        if traces:
            title = _sentence(term.title) + (" per image" if term.per_example else "")
            charts.append((term.name, figure(title, traces)))
    if "alpha_mean" in epochs and any(v is not None for v in epochs["alpha_mean"]):
        # Two scales, one chart: each axis is titled and coloured as its line, so no legend is needed.
        traces = [_line("mean α", epochs["x"], epochs["alpha_mean"], markers=True)]
        if "scale_mean" in epochs:
            traces.append(_line("mean c", epochs["x"], epochs["scale_mean"], markers=True, axis="y2"))
        alpha_colour, scale_colour = traces[0]["line"]["color"], "#76b7b2"
        charts.append(("alpha", figure("Learned α and c (means over pixels)", traces, showlegend=False,
                                       yaxis={"title": {"text": "mean α", "font": {"color": alpha_colour}},
                                              "tickfont": {"color": alpha_colour}, "automargin": True},
                                       yaxis2={"title": {"text": "mean c", "font": {"color": scale_colour}},
                                               "tickfont": {"color": scale_colour}, "overlaying": "y",
                                               "side": "right", "automargin": True})))
    used |= {"alpha_mean", "scale_mean"}
    rest: dict[str, list[tuple[str, str]]] = {}
    for key in epochs:
        if key in used or not any(v is not None for v in epochs[key]):
            continue
        base = key.removeprefix("val_")
        rest.setdefault(base, []).append((key, "validation" if key.startswith("val_") else "training"))
    for base, keys in rest.items():
        traces = [_line(name, epochs["x"], epochs[key], markers=True) for key, name in sorted(keys, key=lambda k: k[1])]
        title = _METRIC_TITLES.get(base, base.replace("_", " "))
        if all(name == "validation" for _, name in keys):
            title = f"validation {title}"
        counts = all(isinstance(v, int) for key, _ in keys for v in epochs[key] if v is not None)
        charts.append((base, figure(_sentence(title), traces,
                                    yaxis={"automargin": True, "rangemode": "tozero" if counts else "normal"})))
    return charts


# ---------------------------------------------------------------------------------------------------
# The run list

TABLE_COLUMNS = ("Run", "State", "Dataset", "Model", "Loss", "Latent size", "Epoch", "Validation loss", "Where")


def table_rows(rows: Sequence[dict], columns: Sequence[str] = TABLE_COLUMNS) -> list[dict[str, str]]:
    """core.progress.run_table's rows as the page shows them: words for states (with the phase), dataset
    titles, numbers formatted, "—" for anything missing; every value text (one type a column)."""
    out = []
    for row in rows:
        state = str(row.get("state") or "—")
        if row.get("phase") and row["phase"] not in ("training", "done"):
            state = f"{state} ({row['phase']})"
        shown = {
            "Run": str(row.get("run") or "—"),
            "State": state,
            "Dataset": _short_title(row["dataset"]) if row.get("dataset") else "—",
            "Model": str(row.get("model") or "—"),
            "Loss": str(row.get("loss") or "—"),
            "Latent size": format_number(row.get("latent")),
            "Epoch": str(row.get("epoch") or "—"),
            "Validation loss": format_number(row.get("val loss")),
            "Age": str(row.get("age") or "—"),
            "Where": "shipped" if row.get("shipped") else "runs/",
        }
        out.append({c: shown[c] for c in columns})
    return out
