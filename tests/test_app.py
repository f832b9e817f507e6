"""The app shell through AppTest: navigation over the registered pages, the home page, and every page
that exists (other issues' pages included, once their files land) running without an exception."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from pages.chrome import LAB_PAGES, available_pages

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_registry_lists_the_planned_pages_and_skips_missing_files(tmp_path: Path) -> None:
    assert [p.path for p in LAB_PAGES] == [
        "pages/home.py", "pages/loss_explorer.py", "pages/train.py", "pages/embeddings.py", "pages/compare.py",
    ]
    assert [p.title for p in LAB_PAGES if p.default] == ["Home"]
    assert len({p.url_path for p in LAB_PAGES}) == len(LAB_PAGES)
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "home.py").write_text("")
    (tmp_path / "pages" / "compare.py").write_text("")
    assert [p.title for p in available_pages(tmp_path)] == ["Home", "Compare"]
    assert {"Home", "Loss Explorer"} <= {p.title for p in available_pages()}


@pytest.mark.parametrize("page", [p.path for p in available_pages()])
def test_every_registered_page_runs(page: str) -> None:
    at = _app()
    at.switch_page(page)
    at.run()
    assert not at.exception, f"{page} raised: {at.exception}"
    assert at.title, f"{page} shows no title"


def test_home_page_says_what_and_where() -> None:
    at = _app()
    assert "Robust Loss Lab" in at.title[0].value
    assert any(f"torch **{torch.__version__}**" in md.value for md in at.markdown)
    device = next(m.value for m in at.metric if m.label == "Device")
    assert device.startswith("CUDA") if torch.cuda.is_available() else device.startswith("CPU")
    links = {link.label for link in at.get("page_link")}
    assert {p.title for p in available_pages() if not p.default} <= links
    assert any("torch" in caption.value for caption in at.sidebar.caption)  # the shared sidebar footer


def test_home_shows_the_shipped_studys_headline_first() -> None:
    from core.home_view import headline

    found = headline()
    at = _app()
    headings = [h.value for h in at.subheader]
    assert headings[0] == "What the shipped study found"
    assert any(found.sentence == md.value for md in at.markdown)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in chart["data"]] == ["VAE", "VQ-VAE"]  # a trace per family
    for bars in chart["data"]:
        mine = [b for b in found.bars if b["family_title"] == bars["name"]]
        assert bars["type"] == "bar" and bars["x"] == [b["loss_label"] for b in mine]
        assert bars["y"] == [b["mean"] for b in mine]
    also = next(md.value for md in at.markdown if md.value.startswith("**Also shipped**"))
    assert all(f"`{name}`" in also for name in ("fmnist", "fashion-mnist-class-penalty")) and found.study not in also


def test_home_lists_runs_and_datasets_in_readable_columns() -> None:
    at = _app()
    headings = [h.value for h in at.subheader]
    assert "Datasets" in headings and "Runs" in headings
    runs, datasets = (table.value for table in at.dataframe)
    assert list(runs.columns) == ["Run", "State", "Dataset", "Model", "Loss", "Epoch", "Where"]
    assert len(runs) > 0 and not runs.isna().any().any() and "None" not in runs.to_numpy()
    assert list(datasets.columns) == ["Dataset", "On disk", "Where"]


def test_home_never_raises_without_the_data_and_run_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import core.runs` raise ImportError: a checkout without them.
    monkeypatch.setitem(sys.modules, "core.datasets", None)
    monkeypatch.setitem(sys.modules, "core.runs", None)
    at = _app()
    notes = [i.value for i in at.info]
    # the headline, the run list and the dataset list each say so; nothing raises
    assert sum("not available yet" in note for note in notes) == 3, notes
