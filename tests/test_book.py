"""The web book builds with warnings as errors, and the chapter page shows what it promises: rendered math,
figures, the exercises with their checks, a working "Open in Colab" link, and no setup cell."""

import pathlib
import re
import shutil
import subprocess
import sys

import nbformat
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    jb = shutil.which("jupyter-book", path=str(pathlib.Path(sys.executable).parent))
    assert jb, "jupyter-book is not installed in this environment (make test installs it)"
    proc = subprocess.run([jb, "build", str(ROOT), "--path-output", str(out), "--warningiserror", "--nitpick",
                           "--keep-going"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out / "_build" / "html"


def _page(html, name):
    return (html / name).read_text(encoding="utf-8")


def _chapters():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [pathlib.Path(f).name for f in files if f.startswith("notebooks/")]


CHAPTERS = _chapters()


def _notebook(name):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def test_index_and_pages_exist(html):
    assert (html / "index.html").exists()
    for page in ("book/intro.html", "book/how_to_use.html", "book/glossary.html", "book/references.html",
                 "book/benchmarks.html"):
        assert (html / page).exists(), page
    assert len(CHAPTERS) >= 6
    for name in CHAPTERS:
        assert (html / "notebooks" / f"{name}.html").exists(), name


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_has_colab_link_to_the_right_path(html, name):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    owner_repo = config["repository"]["url"].split("github.com/")[1].rstrip("/")
    branch = config["repository"]["branch"]
    link = f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/{name}.ipynb"
    page = _page(html, f"notebooks/{name}.html")
    assert page.count(link) >= 2  # the badge under the title and the launch button


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_renders_math_figures_and_exercises(html, name):
    page = _page(html, f"notebooks/{name}.html")
    assert re.search(r'class="math[^"]*"', page), "no rendered equations"
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
    assert len(images) >= 2, f"expected the chapter's figures, found {len(images)}"
    for src in images:
        assert (html / "notebooks" / src).exists(), src
    cells = _notebook(name).cells
    stubs = sum(c.cell_type == "code" and 'raise NotImplementedError("Exercise' in c.source for c in cells)
    solutions = sum(c.cell_type == "code" and c.source.startswith("#@title Solution") for c in cells)
    assert stubs >= 3 and solutions == stubs
    assert page.count("attn-check-not-attempted") == stubs  # the learner's stubs, each checked once
    assert page.count("attn-check-passed") >= solutions  # every solution passes its check
    assert page.count("tag_hide-cell") >= solutions  # solutions are behind a toggle


def test_first_chapter_shows_the_softmax_and_a_named_mistake(html):
    page = _page(html, "notebooks/01_why_attention.html")
    assert "\\operatorname{softmax}" in page
    assert "attn-check-mistake" in page  # the demonstration of a named mistake


@pytest.mark.parametrize("name", CHAPTERS)
def test_setup_cell_is_not_on_the_page(html, name):
    page = _page(html, f"notebooks/{name}.html")
    assert "google.colab" not in page
    assert "runtime.setup" not in page
    assert "pip install" not in page


@pytest.mark.parametrize("name", CHAPTERS)
def test_widgets_are_embedded_with_their_state(html, name):
    if not any("widgets." in c.source and c.cell_type == "code" for c in _notebook(name).cells):
        pytest.skip("this chapter has no widget")
    page = _page(html, f"notebooks/{name}.html")
    assert "application/vnd.jupyter.widget-state+json" in page
    assert "application/vnd.jupyter.widget-view+json" in page


def test_references_and_glossary(html):
    assert "attention is all you need" in _page(html, "book/references.html").lower()
    assert "Temperature" in _page(html, "book/glossary.html")


def test_benchmark_page_shows_the_measured_tables(html):
    page = re.sub(r"<[^>]+>", "", _page(html, "book/benchmarks.html"))  # text only: code is highlighted
    assert "python -m attn_course.bench" in page
    assert "bare/ours" in page and "dense/blocked" in page  # the ratio columns came through the includes
    assert "not measured yet" in page  # the GPU rows say so
