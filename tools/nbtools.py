"""Maintainer tool for the chapters: keep their conventions, re-execute them, check them.

    python tools/nbtools.py sync    notebooks/*.ipynb   write badge, setup cell and metadata from _config.yml
    python tools/nbtools.py execute notebooks/*.ipynb   sync, re-execute in place on the CPU, strip volatile metadata
    python tools/nbtools.py check   notebooks/*.ipynb   report convention problems without running anything

The conventions (DESIGN.md): a title cell with an "Open in Colab" badge; one setup cell, hidden in Colab
(#@title + cellView form) and removed from the book (tag remove-cell), that installs the package only in
Colab, seeds and picks the device; committed executed; solution cells hidden and never redefining what the
learner writes.
"""

from __future__ import annotations

import argparse
import ast
import os
import pathlib
import re
import sys

import nbformat
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"
SETUP_TITLE = '#@title Setup { display-mode: "form" }'
SOLUTION_TITLE = "#@title Solution"
VOLATILE_CELL_KEYS = ("execution", "collapsed", "scrolled", "ExecuteTime", "jupyter")

SETUP_TEMPLATE = '''{title}
# Runs first. In Colab it installs the course package (locally, `make lab` already has);
# then it seeds every random generator and picks the device (a GPU when there is one).
import sys

if "google.colab" in sys.modules:
    %pip install --quiet "attn-course @ git+{repo}@{branch}"

from attn_course import runtime

device = runtime.setup({args})'''


def repository() -> tuple[str, str]:
    """(url, branch) from _config.yml: the one place the repository is named."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def colab_link(path: pathlib.Path) -> str:
    url, branch = repository()
    owner_repo = url.split("github.com/", 1)[1]
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/{path.name}"


def badge(path: pathlib.Path) -> str:
    return f"[![Open In Colab]({BADGE_IMG})]({colab_link(path)})"


def setup_source(nb) -> str:
    url, branch = repository()
    args = nb.metadata.get("attn_course", {}).get("setup_args", "seed=0")
    return SETUP_TEMPLATE.format(title=SETUP_TITLE, repo=url, branch=branch, args=args)


def _is_setup(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith(SETUP_TITLE)


def _is_solution(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith(SOLUTION_TITLE)


def _tags(cell) -> list[str]:
    return cell.metadata.setdefault("tags", [])


def sync(path: pathlib.Path) -> bool:
    """Rewrite the badge, setup cell and notebook metadata from _config.yml. Returns True if changed."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    title = nb.cells[0]
    lines = [ln for ln in title.source.splitlines() if "colab-badge.svg" not in ln] or ["# Untitled"]
    rest = "\n".join(lines[1:]).strip("\n")
    title.source = f"{lines[0]}\n\n{badge(path)}" + (f"\n\n{rest}" if rest else "")
    setup = next((c for c in nb.cells if _is_setup(c)), None)
    if setup is None:
        setup = nbformat.v4.new_code_cell()
        nb.cells.insert(1, setup)
    if setup.source != setup_source(nb):
        setup.source = setup_source(nb)
        setup.outputs, setup.execution_count = [], None
    setup.metadata["cellView"] = "form"
    if "remove-cell" not in _tags(setup):
        _tags(setup).append("remove-cell")
    for cell in nb.cells:
        if _is_solution(cell):
            cell.metadata["cellView"] = "form"
            if "hide-cell" not in _tags(cell):
                _tags(cell).append("hide-cell")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["accelerator"] = "GPU"  # Colab opens the chapter on a GPU runtime
    nb.metadata.setdefault("colab", {})["provenance"] = []
    strip(nb)
    if nbformat.writes(nb) != before:
        nbformat.write(nb, path)
        return True
    return False


def strip(nb) -> None:
    """Remove metadata that changes from run to run (timings, UI state) but keep widget state."""
    for cell in nb.cells:
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        if not cell.metadata.get("tags"):
            cell.metadata.pop("tags", None)
    nb.metadata["language_info"] = {"name": "python"}
    if not nb.metadata.get("widgets"):
        nb.metadata.pop("widgets", None)


def execute(path: pathlib.Path, timeout: int) -> None:
    """Re-execute a notebook in place, on the CPU, with fixed hash seed; then strip volatile metadata."""
    from nbclient import NotebookClient

    sync(path)
    nb = nbformat.read(path, as_version=4)
    os.environ.update(PYTHONHASHSEED="0", ATTN_COURSE_DEVICE="cpu")  # the kernel inherits these
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    strip(nb)
    nbformat.write(nb, path)


def _defined_names(source: str) -> set[str]:
    source = "\n".join("pass" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def check(path: pathlib.Path) -> list[str]:
    """Convention problems of one notebook (empty when all is well). Runs nothing."""
    problems = []
    say = problems.append
    if not re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name):
        say("the file name should look like NN_topic.ipynb")
    nb = nbformat.read(path, as_version=4)
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as err:
        say(f"invalid notebook: {err.message}")
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown" or not first.source.startswith("# "):
        say("the first cell must be a markdown title ('# ...')")
    elif badge(path) not in first.source:
        say(f"the title cell lacks the Colab badge linking to {colab_link(path)} (run: make execute or nbtools sync)")
    setups = [i for i, c in enumerate(nb.cells) if _is_setup(c)]
    if setups != [1]:
        say("the second cell, and only it, must be the setup cell")
    else:
        setup = nb.cells[1]
        if setup.source != setup_source(nb):
            say("the setup cell differs from the template (run: nbtools sync)")
        if setup.metadata.get("cellView") != "form" or "remove-cell" not in setup.metadata.get("tags", []):
            say("the setup cell needs cellView 'form' (hidden in Colab) and the tag remove-cell (not in the book)")
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        say("kernelspec name must be python3")
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    counts = [c.execution_count for c in code]
    if None in counts:
        say(f"{counts.count(None)} of {len(code)} code cells are not executed (run: make execute)")
    elif counts != list(range(1, len(code) + 1)):
        say("execution counts are not 1, 2, 3, ... in order: re-execute top to bottom (make execute)")
    for i, cell in enumerate(nb.cells):
        if not cell.source.strip():
            say(f"cell {i} is empty: delete it")
        tags = cell.metadata.get("tags", [])
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])) and "raises-exception" not in tags:
            say(f"cell {i} has a stored error but no raises-exception tag")
        if volatile := [k for k in VOLATILE_CELL_KEYS if k in cell.metadata]:
            say(f"cell {i} has volatile metadata {volatile} (run: nbtools sync)")
    learner = set().union(*(_defined_names(c.source) for c in code if not _is_solution(c)))
    for i, cell in enumerate(nb.cells):
        if not _is_solution(cell):
            continue
        if "hide-cell" not in cell.metadata.get("tags", []) or cell.metadata.get("cellView") != "form":
            say(f"solution cell {i} must be hidden: tag hide-cell (book) and cellView 'form' (Colab)")
        if clash := _defined_names(cell.source) & learner:
            say(f"solution cell {i} redefines {sorted(clash)}, which would overwrite the learner's code on Run all")
    toc = (ROOT / "_toc.yml").read_text()
    if f"notebooks/{path.stem}" not in toc:
        say("not listed in _toc.yml")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["sync", "execute", "check"])
    parser.add_argument("notebooks", nargs="+", type=pathlib.Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell when executing")
    args = parser.parse_args(argv)
    status = 0
    for path in args.notebooks:
        if not path.exists():
            print(f"{path}: no such notebook", file=sys.stderr)
            status = 1
            continue
        if args.command == "sync":
            print(f"{path}: {'updated' if sync(path) else 'already in sync'}")
        elif args.command == "execute":
            print(f"{path}: executing ...", flush=True)
            execute(path, args.timeout)
            print(f"{path}: done")
        else:
            problems = check(path)
            for problem in problems:
                print(f"{path}: {problem}")
            status |= bool(problems)
            if not problems:
                print(f"{path}: ok")
    return status


if __name__ == "__main__":
    sys.exit(main())
