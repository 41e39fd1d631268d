"""report.html: the tables equal the result, every figure is embedded with its caption, nothing is fetched,
and in a real headless browser (Playwright driving /usr/bin/chromium) it shows every figure and sorts."""

import base64
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from featurepipe.benchmark import BenchmarkResult, run_benchmark
from featurepipe.benchmark.plots import figure_caption, figure_files
from featurepipe.benchmark.report import write_reports
from featurepipe.cli import main
from featurepipe.datasets import load_folder

CHROMIUM = "/usr/bin/chromium"


class _Page(HTMLParser):
    """Tables (id -> header, rows of (text, data-sort)), figures (data URI, caption) and every URL attribute."""

    def __init__(self):
        super().__init__()
        self.tables, self.figures, self.urls = {}, [], []
        self._table = self._row = self._cell = self._caption = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), {"header": [], "rows": []})
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ["", attrs.get("data-sort")]
        elif tag == "img":
            self.figures.append({"src": attrs["src"], "caption": ""})
        elif tag == "figcaption":
            self._caption = self.figures[-1]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(tuple(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row and not self._table["header"]:
                self._table["header"] = [c[0] for c in self._row]
            else:
                self._table["rows"].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "figcaption":
            self._caption = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data
        if self._caption is not None:
            self._caption["caption"] += data


def _parse(text):
    page = _Page()
    page.feed(text)
    return page


def _write_dataset(root):
    """Three classes of 24x24 PNGs (12 each) told apart by brightness, with overlap."""
    rng = np.random.default_rng(0)
    for label, level in (("benign", 0.42), ("malignant", 0.5), ("normal", 0.58)):
        (root / label).mkdir(parents=True)
        for i in range(12):
            image = np.clip(rng.normal(level + rng.normal(0, 0.03), 0.12, (24, 24)), 0, 1)
            cv2.imwrite(str(root / label / f"{label}{i}.png"), np.rint(image * 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny benchmark (2 folds, 36 images, two handcrafted recipes, one tuned) with every plot."""
    root = _write_dataset(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("bench")
    with pytest.warns(UserWarning, match="duplicate images were not checked"):
        result = run_benchmark(load_folder(root), ["glcm_svm", "firstorder_glcm_svm"], cv=2, duplicates=None,
                               param_grids={"glcm_svm": {"classifier__estimator__C": [0.1, 10.0]}},
                               progress=False, output_dir=out)
    return result, out


def test_report_html_tables_equal_the_result(bench):
    result, out = bench
    path = out / "report.html"
    assert str(path) in result.files
    page = _parse(path.read_text(encoding="utf-8"))
    main_table = page.tables["table-0"]
    metrics = result.config["metrics"]
    from featurepipe.metrics import METRIC_LABELS

    assert main_table["header"][:2 + len(metrics)] == ["#", "pipeline"] + [METRIC_LABELS[m] for m in metrics]
    assert [row[1][0] for row in main_table["rows"]] == result.ranking()
    for row in main_table["rows"]:
        name = row[1][0]
        for j, metric in enumerate(metrics, start=2):
            stats = result.summary[name][metric]
            text, key = row[j]
            assert text.startswith(f"{stats['mean']:.3f} ± {stats['std']:.3f}")
            # repr() of the stored float: the sort key is exactly the table's mean
            assert float(key) == stats["mean"]
    # The confidence-interval table prints the stored bounds.
    ci = next(t for t in page.tables.values() if t["rows"] and t["rows"][0][0][0] in result.summary
              and t["header"] == ["pipeline"] + [METRIC_LABELS[m] for m in metrics])
    for row in ci["rows"]:
        s = result.summary[row[0][0]][metrics[0]]
        assert row[1][0] == f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
    # Hyper-parameters chosen in every fold of the tuned pipeline, with the inner CV score.
    tuning = page.tables["tuning"]["rows"]
    tuned = [r for r in result.folds if r["pipeline"] == "glcm_svm"]
    assert len(tuning) == len(tuned) == 2
    for row, rec in zip(tuning, sorted(tuned, key=lambda r: r["fold"])):
        assert row[0][0] == "glcm_svm" and row[2][0] == str(rec["fold"] + 1)
        assert f'"classifier__estimator__C": {rec["best_params"]["classifier__estimator__C"]}' in row[3][0]
        assert row[4][0] == f"{rec['inner_best_score']:.3f}"


def test_report_html_embeds_every_figure_with_its_caption_and_fetches_nothing(bench):
    result, out = bench
    text = (out / "report.html").read_text(encoding="utf-8")
    page = _parse(text)
    pngs = figure_files(out)
    names = {p.name for p in pngs}
    assert {"roc_curves.png", "pr_curves.png", "confusion_matrices.png", "fold_scores.png",
            "intensity_distributions.png", "misclassified_glcm_svm.png"} <= names
    assert len(page.figures) == len(pngs)
    for png, fig in zip(pngs, page.figures):
        svg = png.with_suffix(".svg")
        shown = svg if svg.is_file() else png
        mime, data = re.fullmatch(r"data:(image/[a-z+]+);base64,(.+)", fig["src"]).groups()
        assert mime == ("image/svg+xml" if shown is svg else "image/png")
        assert base64.b64decode(data) == shown.read_bytes()  # exact: the file's bytes, embedded
        assert figure_caption(result, png.name) in " ".join(fig["caption"].split())
    # Offline: every URL in the page is a data: URI, and no http(s) reference anywhere.
    assert page.urls and all(u.startswith("data:") for u in page.urls)
    assert "http://" not in text and "https://" not in text
    # The leakage report, the dataset and the configuration are there.
    for heading in ("Leakage report", "Experiment configuration", "Environment", "Hyper-parameters chosen per fold"):
        assert f"<h2>{heading}</h2>" in text
    assert "Patient groups" in text and result.config["cv_description"] in text


def test_summary_md_links_every_figure_and_load_rerenders_the_same_reports(bench, tmp_path):
    result, out = bench
    md = (out / "summary.md").read_text(encoding="utf-8")
    for png in figure_files(out):
        assert f"[{png.name}]({png.name})" in md
        if png.with_suffix(".svg").is_file():
            assert f"([SVG]({png.with_suffix('.svg').name}))" in md
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "report.html").unlink()
    loaded = BenchmarkResult.load(copy)
    written = write_reports(loaded, copy)
    assert str(copy / "report.html") in written
    # exact: the same function renders the same stored values and figure bytes
    assert (copy / "report.html").read_text(encoding="utf-8") == (out / "report.html").read_text(encoding="utf-8")
    assert (copy / "summary.md").read_text(encoding="utf-8") == md


def test_cli_prints_the_report_html_path(tmp_path, capsys):
    root = _write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    with pytest.warns(UserWarning):
        assert main(["benchmark", str(root), "--recipes", "glcm_svm", "--splits", "2", "--no-plots",
                     "--duplicates", "none", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"open in a browser (offline): {(out / 'report.html').resolve()}" in printed
    assert "<p>No figures were written (plots=False).</p>" in (out / "report.html").read_text(encoding="utf-8")


def _browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install "
                                     "playwright); the report's browser test needs it")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    return playwright


def test_report_html_in_a_real_browser(bench):
    result, out = bench
    sync_playwright = _browser().sync_playwright
    errors, requests = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.on("console", lambda msg: errors.append(msg.text) if msg.type in ("error", "warning") else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: requests.append(req.url))
            page.goto((out / "report.html").resolve().as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "figure img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            assert len(images) == len(figure_files(out)) >= 6
            assert all(done and w > 0 and h > 0 for done, w, h in images), images
            # Sort the main table by accuracy: ascending on the first click, descending on the second.
            header = page.locator("#table-0 th").filter(has_text=re.compile(r"^accuracy$"))
            def names():
                return page.eval_on_selector_all("#table-0 tbody tr", "rows => rows.map(r => r.cells[1].textContent)")

            means = {n: result.summary[n]["accuracy"]["mean"] for n in result.summary}
            header.click()
            shown = [means[n] for n in names()]
            assert sorted(names()) == sorted(means) and shown == sorted(shown)
            assert header.get_attribute("aria-sort") == "ascending"
            header.click()
            shown = [means[n] for n in names()]
            assert shown == sorted(shown, reverse=True)
            # ... and by the text column: pipeline names alphabetically.
            page.locator("#table-0 th").filter(has_text=re.compile(r"^pipeline$")).click()
            assert names() == sorted(means)
            page.screenshot(path=str(out / "report_screenshot.png"), full_page=False)
        finally:
            browser.close()
    assert errors == []
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
