"""One damaged run never takes a page down: the Compare and Embeddings pages, through AppTest, on a runs
folder holding copies of shipped runs damaged one way each (a wrong-typed or null config field, a
truncated embeddings or weights file, a non-UTF-8 history, garbage, wrong-typed or absurdly nested
probes, an absurdly nested config) beside healthy copies and the shipped study itself. Each page
renders, names every damaged run with what is wrong with it, and still shows the others; a run dated
in the future is never the Embeddings page's default."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from apptest_helpers import run_page

from core import compare
from core.runs import REPO, RunInfo

SHIPPED = REPO / "checkpoints"
SHIPPED_STUDY = "fashion-mnist-reference"
SHIPPED_RUNS = 14  # a VAE and a VQ-VAE for each of its 7 losses
STUDY = "damaged-study"
COMPARE = str(REPO / "pages" / "compare.py")
EMBEDDINGS = str(REPO / "pages" / "embeddings.py")
NOW = datetime.now(timezone.utc)

# run id -> (what the page must say is wrong, or None where a page may also just show the run)
DAMAGE = {
    "bad-latent": "latent_dim",
    "bad-model-null": "model",
    "bad-embeddings": "embeddings.safetensors",
    "bad-weights": "model.safetensors",
    "bad-history": None,  # a non-UTF-8 byte: named as damage, or the line skipped and the run shown
    "bad-probes": "probes.json",
    "bad-probes-types": "probes.json",
    "bad-probes-deep": "probes.json",
    "bad-config-deep": "config.json",
}
# What the Embeddings page reads (config and embeddings; weights and probes only on a click or elsewhere).
EMBEDDING_DAMAGE = ("bad-latent", "bad-model-null", "bad-embeddings", "bad-config-deep")


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def _copy(root: Path, run_id: str, loss: str = "mse", *, created: datetime, **config_changes) -> Path:
    """A copy of a shipped run (it carries its images: no dataset needed) as `run_id` of STUDY."""
    target = root / run_id
    shutil.copytree(SHIPPED / f"{SHIPPED_STUDY}-{loss}-z16-s0", target)
    config = json.loads((target / "config.json").read_text())
    config.update(run_id=run_id, study=STUDY, created=_iso(created), **config_changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture()
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runs folder of damaged and healthy copies; the real shipped checkpoints; no dataset files."""
    root = tmp_path / "runs"
    root.mkdir()
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(root))
    monkeypatch.delenv("ROBUST_LOSS_LAB_CHECKPOINTS", raising=False)
    monkeypatch.setenv("ROBUST_LOSS_LAB_DATA", str(tmp_path / "data"))
    old = NOW - timedelta(hours=1)
    _copy(root, "good-mse", created=NOW - timedelta(seconds=5))  # the newest plausible run: the default
    _copy(root, "good-future", "cauchy", created=datetime(2999, 1, 1, tzinfo=timezone.utc))
    _copy(root, "bad-latent", created=old, latent_dim="16")
    _copy(root, "bad-model-null", created=old, model=None)
    run = _copy(root, "bad-embeddings", created=old)
    data = (run / "embeddings.safetensors").read_bytes()
    (run / "embeddings.safetensors").write_bytes(data[: len(data) // 2])  # a copy cut short
    run = _copy(root, "bad-weights", created=old)
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[:-100])
    run = _copy(root, "bad-history", created=old)
    lines = (run / "history.jsonl").read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][:10] + b"\xff\xfe" + lines[1][10:]
    (run / "history.jsonl").write_bytes(b"".join(lines))
    _copy(root, "bad-probes", created=old)
    (root / "bad-probes" / "probes.json").write_bytes(b"\x00\x93garbage{")
    _copy(root, "bad-probes-types", created=old)
    (root / "bad-probes-types" / "probes.json").write_text(json.dumps(
        {"probes": {"mlp": {"accuracy": "high", "cross_entropy": [1]}}}))
    _copy(root, "bad-probes-deep", created=old)
    (root / "bad-probes-deep" / "probes.json").write_text("[" * 5000 + "]" * 5000)
    run = _copy(root, "bad-config-deep", created=old)
    config = json.loads((run / "config.json").read_text())
    text = json.dumps(config)[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"
    (run / "config.json").write_text(text)
    return root


def _warnings(at) -> str:
    return "\n".join(w.value for w in at.warning)


def test_run_problem_names_each_damage_and_passes_the_healthy_runs(lab: Path) -> None:
    from core.runs import list_runs

    infos = {info.run_id: info for info in list_runs([lab, SHIPPED])}
    for run_id, needle in DAMAGE.items():
        problem = compare.run_problem(infos[run_id], compare.RUN_CHECKS)
        if needle is None:
            assert problem is None or "history.jsonl" in problem, problem
            continue
        assert problem and needle in problem, (run_id, problem)
    for run_id, info in infos.items():
        if run_id.startswith(("good-", SHIPPED_STUDY)):
            assert compare.run_problem(info, compare.RUN_CHECKS) is None, run_id
    studies = {s.name: s for s in compare.list_studies([lab, SHIPPED], checks=compare.RUN_CHECKS)}
    assert {r.run_id for r in studies[SHIPPED_STUDY].usable} == {i for i in infos if i.startswith(SHIPPED_STUDY)}
    assert {"good-mse", "good-future"} <= {r.run_id for r in studies[STUDY].usable}


def test_newest_first_puts_runs_dated_in_the_future_last(lab: Path) -> None:
    def info(run_id: str, created: str) -> RunInfo:
        return RunInfo(lab / run_id, run_id, False, {"created": created}, {"state": "finished"})

    runs = [info("old", "2020-01-01T00:00:00+00:00"), info("future", "2999-01-01T00:00:00+00:00"),
            info("new", _iso(NOW - timedelta(minutes=1))), info("undated", "yesterday")]
    assert [r.run_id for r in compare.newest_first(runs, NOW)] == ["new", "old", "undated", "future"]


@pytest.mark.slow
def test_compare_page_names_the_damaged_runs_and_shows_the_rest(lab: Path) -> None:
    at = run_page(COMPARE, compare_study=STUDY)
    warned = _warnings(at)
    shown = set(at.dataframe[0].value["run"])
    for run_id, needle in DAMAGE.items():
        if needle is None:
            assert run_id in warned or run_id in shown, run_id
            continue
        line = next((w for w in warned.splitlines() if f"`{run_id}`" in w), "")
        assert needle in line, (run_id, line)
    assert {"good-mse", "good-future"} <= shown and not shown & {k for k, v in DAMAGE.items() if v}
    assert len(at.get("image")) == 2  # the healthy runs' reconstructions and samples are drawn
    # The shipped study is untouched by the damage beside it.
    at.selectbox(key="compare_study").set_value(SHIPPED_STUDY).run()
    assert not at.exception, at.exception
    assert len(at.dataframe[0].value) == SHIPPED_RUNS and "damaged run(s) of" not in _warnings(at)
    assert len(at.get("image")) == 2


@pytest.mark.slow
def test_embeddings_page_names_the_damaged_runs_and_defaults_to_the_newest_plausible(lab: Path) -> None:
    at = run_page(EMBEDDINGS)
    warned = _warnings(at)
    for run_id in EMBEDDING_DAMAGE:
        line = next((w for w in warned.splitlines() if f"`{run_id}`" in w), "")
        assert DAMAGE[run_id] in line, (run_id, line)
    run = at.selectbox(key="emb_run_a")
    assert run.value == str(lab / "good-mse")  # not good-future, dated 2999
    assert len(at.get("plotly_chart")) == 2  # its 3-D chart and the point picker
    assert not any(run_id in o for o in run.options for run_id in EMBEDDING_DAMAGE)
    assert any("good-future" in o for o in run.options)
    assert sum(SHIPPED_STUDY in o for o in run.options) == SHIPPED_RUNS
    # A shipped study still draws as a grid beside the damage.
    at.radio(key="emb_mode").set_value("grid").run()
    at.selectbox(key="emb_study").set_value(SHIPPED_STUDY).run()
    assert not at.exception, at.exception
    assert len([c for c in at.get("plotly_chart") if "emb_chart_" in c.proto.id]) == SHIPPED_RUNS
