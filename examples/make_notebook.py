"""Write examples/tutorial.ipynb from examples/tutorial.py, so that the two never drift apart.

The script uses the "percent" cell format: a line ``# %%`` starts a code
cell and ``# %% [markdown]`` a markdown cell, whose lines are comments
(``# `` is stripped). The notebook is written without outputs, with cell ids
numbered in order, so that the same script always gives the same file.

Usage: ``python examples/make_notebook.py`` writes the notebook;
``--check`` only reports whether the notebook on disk is up to date and
exits with 1 when it is not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

EXAMPLES = Path(__file__).resolve().parent
SCRIPT = EXAMPLES / "tutorial.py"
NOTEBOOK = EXAMPLES / "tutorial.ipynb"

CELL_MARKER = "# %%"
MARKDOWN_MARKER = "# %% [markdown]"


def split_cells(source: str) -> list[tuple[str, list[str]]]:
    """Split a percent-format script into ``(kind, lines)`` pairs; kind is "code" or "markdown"."""
    cells: list[tuple[str, list[str]]] = []
    for line in source.splitlines():
        stripped = line.rstrip()
        if stripped == MARKDOWN_MARKER:
            cells.append(("markdown", []))
        elif stripped == CELL_MARKER:
            cells.append(("code", []))
        elif not cells:
            if stripped:
                raise ValueError(f"{SCRIPT.name} must start with a '# %%' cell marker, found {line!r}")
        else:
            cells[-1][1].append(line)
    return cells


def markdown_text(lines: list[str]) -> str:
    """Return the text of a markdown cell from its comment lines."""
    text = []
    for line in lines:
        if line.startswith("# "):
            text.append(line[2:])
        elif line.rstrip() in ("#", ""):
            text.append("")
        else:
            raise ValueError(f"markdown cell line is not a comment: {line!r}")
    return "\n".join(text).strip("\n")


def build_notebook(source: str) -> nbformat.NotebookNode:
    """Return the notebook for a percent-format script."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, (kind, lines) in enumerate(split_cells(source)):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(markdown_text(lines))
        else:
            cell = nbformat.v4.new_code_cell("\n".join(lines).strip("\n"))
        cell.id = f"cell-{index:02d}"
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def render_notebook(source: str) -> str:
    """Return the notebook of a percent-format script as the JSON text written to disk."""
    return nbformat.writes(build_notebook(source)) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report whether the notebook is up to date; write nothing")
    arguments = parser.parse_args()

    expected = render_notebook(SCRIPT.read_text(encoding="utf-8"))
    if arguments.check:
        current = NOTEBOOK.read_text(encoding="utf-8") if NOTEBOOK.is_file() else ""
        if current != expected:
            print(f"{NOTEBOOK} is out of date; run python {Path(__file__).name} to write it", file=sys.stderr)
            return 1
        print(f"{NOTEBOOK} is up to date")
        return 0

    NOTEBOOK.write_text(expected, encoding="utf-8")
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
