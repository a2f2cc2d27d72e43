"""The notebook conventions are checked (every chapter passes) and the checker itself can fail."""

import importlib.util
import pathlib
import shutil

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("nbtools", ROOT / "tools" / "nbtools.py")
nbtools = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nbtools)
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_follows_the_conventions(path):
    assert nbtools.check(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_is_in_sync_with_config(path, tmp_path):
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    assert nbtools.sync(copy) is False, "run `python tools/nbtools.py sync` and commit"


@pytest.fixture
def chapter(tmp_path):
    copy = tmp_path / NOTEBOOKS[0].name
    shutil.copy(NOTEBOOKS[0], copy)
    return copy


def _edit(path, change):
    nb = nbformat.read(path, as_version=4)
    change(nb)
    nbformat.write(nb, path)


def test_check_flags_a_missing_badge(chapter):
    _edit(chapter, lambda nb: setattr(nb.cells[0], "source", "# Title only"))
    assert any("Colab badge" in p for p in nbtools.check(chapter))


def test_check_flags_unexecuted_cells_and_errors(chapter):
    def change(nb):
        code = [c for c in nb.cells if c.cell_type == "code"]
        code[2].execution_count = None
        code[3].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[])]
    _edit(chapter, change)
    problems = nbtools.check(chapter)
    assert any("not executed" in p for p in problems)
    assert any("stored error" in p for p in problems)


def test_check_flags_a_solution_that_overwrites_the_learner(chapter):
    def change(nb):
        sol = next(c for c in nb.cells if c.source.startswith(nbtools.SOLUTION_TITLE))
        sol.source = sol.source.replace("def softmax_with_temperature_solution", "def softmax_with_temperature")
    _edit(chapter, change)
    assert any("overwrite the learner" in p for p in nbtools.check(chapter))


def test_check_flags_an_edited_setup_cell(chapter):
    _edit(chapter, lambda nb: setattr(nb.cells[1], "source", nb.cells[1].source + "\nprint(1)"))
    assert any("setup cell differs" in p for p in nbtools.check(chapter))
    assert nbtools.sync(chapter) is True
    assert not any("setup cell differs" in p for p in nbtools.check(chapter))


def test_sync_writes_badge_and_hides_setup(chapter):
    def change(nb):
        nb.cells[0].source = "# 1. A title\n\nSome words."
        del nb.cells[1]
    _edit(chapter, change)
    nbtools.sync(chapter)
    nb = nbformat.read(chapter, as_version=4)
    assert nb.cells[0].source.startswith("# 1. A title\n\n[![Open In Colab]")
    assert nb.cells[0].source.endswith("Some words.")
    setup = nb.cells[1]
    assert setup.source.startswith(nbtools.SETUP_TITLE)
    assert setup.metadata["cellView"] == "form" and "remove-cell" in setup.metadata["tags"]
    url, branch = nbtools.repository()
    assert f"git+{url}@{branch}" in setup.source


def test_check_flags_an_empty_cell(chapter):
    _edit(chapter, lambda nb: nb.cells.insert(3, nbformat.v4.new_code_cell("")))
    assert any("is empty" in p for p in nbtools.check(chapter))
