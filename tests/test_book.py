"""The web book builds with warnings as errors, and the chapter page shows what it promises: rendered math,
figures, the exercises with their checks, a working "Open in Colab" link, and no setup cell."""

import pathlib
import re
import shutil
import subprocess
import sys

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


def test_index_and_pages_exist(html):
    assert (html / "index.html").exists()
    for page in ("book/intro.html", "book/how_to_use.html", "book/glossary.html", "book/references.html",
                 "notebooks/01_why_attention.html"):
        assert (html / page).exists(), page


def test_chapter_has_colab_link_to_the_right_path(html):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    owner_repo = config["repository"]["url"].split("github.com/")[1].rstrip("/")
    branch = config["repository"]["branch"]
    link = f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/01_why_attention.ipynb"
    page = _page(html, "notebooks/01_why_attention.html")
    assert page.count(link) >= 2  # the badge under the title and the launch button


def test_chapter_renders_math_figures_and_exercises(html):
    page = _page(html, "notebooks/01_why_attention.html")
    assert re.search(r'class="math[^"]*"', page), "no rendered equations"
    assert "\\operatorname{softmax}" in page
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
    assert len(images) >= 5, f"expected the chapter's figures, found {len(images)}"
    for src in images:
        assert (html / "notebooks" / src).exists(), src
    assert page.count("attn-check-not-attempted") == 3  # the learner's three stubs
    assert page.count("attn-check-passed") == 3  # the three solutions
    assert "attn-check-mistake" in page  # the demonstration of a named mistake
    assert page.count("tag_hide-cell") >= 3  # solutions are behind a toggle


def test_setup_cell_is_not_on_the_page(html):
    page = _page(html, "notebooks/01_why_attention.html")
    assert "google.colab" not in page
    assert "runtime.setup" not in page
    assert "pip install" not in page


def test_widgets_are_embedded_with_their_state(html):
    page = _page(html, "notebooks/01_why_attention.html")
    assert "application/vnd.jupyter.widget-state+json" in page
    assert "application/vnd.jupyter.widget-view+json" in page


def test_references_and_glossary(html):
    assert "attention is all you need" in _page(html, "book/references.html").lower()
    assert "Temperature" in _page(html, "book/glossary.html")
