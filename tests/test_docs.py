"""The README and docs/ say only what the repository holds: paths that exist, line counts that are
current, a guide of bounded length, and no words about how the project is developed."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
TEXTS = [README, *DOCS, *sorted((ROOT / "notebooks").glob("*.ipynb"))]
SOURCES = [*sorted((ROOT / "minissp").rglob("*.py")), ROOT / "train.py"]
PATH = re.compile(r"`((?:minissp|docs|tests|notebooks|benchmarks|results)/[\w./*-]+?)`")


@pytest.mark.parametrize("doc", TEXTS, ids=lambda p: p.name)
def test_every_path_a_document_names_exists(doc):
    text = doc.read_text()
    missing = [p for p in PATH.findall(text)
               if not any(ROOT.glob(p.split("::")[0])) and not p.startswith(("results/jobs", "runs/"))]
    assert not missing, f"{doc.name} names files the repository does not hold: {missing}"


def test_no_file_cites_a_design_document_the_repository_does_not_hold():
    for path in [*TEXTS, *SOURCES]:
        for name in re.findall(r"\b([A-Z][A-Z_]+\.md)\b", path.read_text()):
            assert (ROOT / name).exists() or (ROOT / "docs" / name).exists(), f"{path.name} cites {name}"


def test_the_readme_is_a_guide_of_bounded_length_without_process_words():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for doc in [README, *DOCS]:
        found = re.findall(r"this stop|previous stop|target [0-9]|development cpu|\bissue #?\d", doc.read_text(), re.I)
        assert not found, f"{doc.name}: {found}"
    head = "\n".join(text.splitlines()[:60])
    for part in ("![", "python train.py", "pytest -q", "| held-out metric |", "Reading order"):
        assert part in head, f"the README's first screen lacks {part!r}"


def test_the_reading_order_states_current_line_counts():
    """`| n | `file` | lines |` rows and "(`path`, N lines" mentions: within 10% of the file today."""
    text = README.read_text()
    rows = re.findall(r"\| `(minissp/[\w/.]+\.py)` \| (\d+) \|", text)
    assert len(rows) >= 5
    stated = rows + re.findall(r"`(minissp/[\w/.]+)`,? \(?(\d+)(?: lines)?[):,]", text)
    for path, lines in stated:
        target = ROOT / path
        files = [target] if target.is_file() else sorted(target.rglob("*.py"))
        actual = sum(len(f.read_text().splitlines()) for f in files)
        assert abs(actual - int(lines)) <= 0.1 * actual, f"README says {path} has {lines} lines; it has {actual}"


def test_the_ci_script_runs_the_readmes_test_command():
    command = [line for line in README.read_text().splitlines() if line.startswith("python3 -m venv .venv && ")]
    assert any("pytest" in line for line in command) and any("python train.py" in line for line in command)
    assert "^python3 -m venv .venv && .*pytest" in (ROOT / ".ci" / "run").read_text()
