"""Run every teaching notebook in notebooks/ top to bottom; a cell that raises fails its test.

    pytest tests/test_notebooks.py -q            # one test per notebook, a few minutes on a 2-core CPU
    python tests/test_notebooks.py               # re-execute every notebook and save its outputs in place
    python tests/test_notebooks.py 03_ppo        # ... or only the ones named

Each notebook runs in a fresh `python3` kernel (nbclient + ipykernel) with the
notebooks folder as its working directory, as a reader would run it. The
kernel is the interpreter running the tests: a kernel spec pointing at
`sys.executable` is written to a temporary folder put first on JUPYTER_PATH,
so a `python3` kernel installed elsewhere (user-wide, another venv) is never
picked. The kernels also get a temporary TMPDIR: the notebooks keep their
files (the small supervised checkpoint they share) under the system's
temporary folder, never in the repository.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 180
"""A notebook should take at most ~90 s in all; one cell running past this is a hang."""
KERNEL = "python3"


def isolated_environment(folder: Path) -> dict[str, str]:
    """Environment variables that make kernels run this interpreter and keep their files in `folder`."""
    spec = folder / "jupyter" / "kernels" / KERNEL
    write_kernel_spec(path=str(spec))  # argv = [sys.executable, "-m", "ipykernel_launcher", ...]
    scratch = folder / "tmp"
    scratch.mkdir(exist_ok=True)
    return {"JUPYTER_PATH": str(folder / "jupyter"), "TMPDIR": str(scratch)}


def execute(notebook):
    """Run a notebook object in place (outputs filled in); raises CellExecutionError at the first failing cell."""
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, startup_timeout=120,
                            record_timing=False, resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()
    return notebook


def text_outputs(notebook) -> str:
    """Everything the notebook printed (stream and plain-text outputs), as one string."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture(scope="session", autouse=True)
def kernel_environment(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        for key, value in isolated_environment(tmp_path_factory.mktemp("kernels")).items():
            mp.setenv(key, value)
        yield


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5, f"expected the five teaching notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path):
    execute(nbformat.read(path, as_version=4))


def test_results_notebook_explains_how_to_make_missing_results(tmp_path, monkeypatch):
    """Before the experiment has run, the results notebook says how to run it and stops without an error."""
    monkeypatch.setenv("MINISSP_RESULTS", str(tmp_path / "no-results-here"))
    notebook = execute(nbformat.read(NOTEBOOK_DIR / "05_results.ipynb", as_version=4))
    assert "python -m minissp.experiments" in text_outputs(notebook)


def test_kernels_run_this_interpreter():
    notebook = execute(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")]))
    assert text_outputs(notebook).strip() == sys.executable


def test_a_cell_that_raises_fails_the_run():
    """The harness itself: an error in any cell must surface as a failure, not pass silently."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                               nbformat.v4.new_code_cell("raise ValueError('boom')")])
    with pytest.raises(CellExecutionError, match="boom"):
        execute(notebook)


def main(names: list[str]) -> int:
    """Execute the notebooks (all, or those whose name starts with one of `names`) and save their outputs."""
    chosen = [p for p in NOTEBOOKS if not names or any(p.name.startswith(n) for n in names)]
    with tempfile.TemporaryDirectory() as folder:
        os.environ.update(isolated_environment(Path(folder)))
        for path in chosen:
            notebook = nbformat.read(path, as_version=4)
            start = time.perf_counter()
            try:
                execute(notebook)
            except CellExecutionError as e:
                print(f"{path.name}: FAILED\n{e}", file=sys.stderr)
                return 1
            nbformat.write(notebook, path)
            print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s and saved")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
