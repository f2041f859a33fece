"""The floors of docs/architecture.md, read from the source: who may import whom, how long a
module may grow, and that every relative link in README.md and docs/*.md leads somewhere.

Imports are parsed with :mod:`ast`, at module level and inside functions alike (a lazy import
is still an arrow between floors), with relative imports resolved against the module's own
package. Nothing is imported, so a failing rule names the file and line it found.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# folder in the checkout -> the package it is installed as (pyproject.toml's package-dir)
FLOORS = {"cli": "gradq.cli", "service": "gradq.service", "workers": "gradq.workers",
          "train": "gradq.train", "nn": "gradq.nn", "ui": "gradq.ui",
          "migrations": "gradq.migrations", "gradq_pkg": "gradq"}

# The phrase a module's opening docstring must hold to be longer than MAX_LINES.
LONG_PHRASE = "over 500 lines because"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    """``service/store/jobs.py`` -> ``gradq.service.store.jobs``."""
    rel = path.relative_to(ROOT)
    parts = [FLOORS[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(*folders: str) -> list[Path]:
    """Every Python file under the given folders of the checkout."""
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py")
                  if "__pycache__" not in p.parts)


def _imports(path: Path, name: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, however deeply nested;
    ``name`` is the module's dotted name (by default, from where it lies in the checkout)."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            if not node.module:  # ``from . import x``: x may be a module of that package
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return found


def _gradq_imports(folder: str) -> list[tuple[str, int, str]]:
    """(file, line, module) of every gradq import made by a module under ``folder``."""
    return [(str(p.relative_to(ROOT)), line, mod) for p in _modules(folder)
            for line, mod in _imports(p) if mod == "gradq" or mod.startswith("gradq.")]


def _outside(imports: list[tuple[str, int, str]], allowed: tuple[str, ...]) -> list[str]:
    """The imports whose module is neither one of ``allowed`` nor inside one of them."""
    return [f"{f}:{line} imports {mod}" for f, line, mod in imports
            if not any(mod == a or mod.startswith(a + ".") for a in allowed)]


def _inside(imports: list[tuple[str, int, str]], banned: tuple[str, ...]) -> list[str]:
    """The imports whose module is one of ``banned`` or inside one of them."""
    return [f"{f}:{line} imports {mod}" for f, line, mod in imports
            if any(mod == b or mod.startswith(b + ".") for b in banned)]


def test_the_parser_sees_relative_nested_and_absolute_imports(tmp_path: Path) -> None:
    """The rules below are only as good as the parser: it must see every form of import."""
    sample = tmp_path / "probe.py"
    sample.write_text("import gradq.nn\nfrom ..settings import x\n"
                      "def f():\n    from gradq.workers import runner\n"
                      "    from . import jobs\n")
    found = {mod for _, mod in _imports(sample, "gradq.service.store.probe")}
    assert found >= {"gradq.nn", "gradq.service.settings", "gradq.workers",
                     "gradq.service.store", "gradq.service.store.jobs"}


def test_nn_imports_nothing_of_gradq() -> None:
    assert _outside(_gradq_imports("nn"), ("gradq.nn",)) == []


def test_train_imports_only_train_and_nn() -> None:
    assert _outside(_gradq_imports("train"), ("gradq.train", "gradq.nn")) == []


def test_service_imports_no_workers_train_cli_or_ui() -> None:
    banned = ("gradq.workers", "gradq.train", "gradq.cli", "gradq.ui")
    assert _inside(_gradq_imports("service"), banned) == []


def test_workers_import_no_cli_or_ui() -> None:
    assert _inside(_gradq_imports("workers"), ("gradq.cli", "gradq.ui")) == []


def test_ui_imports_only_the_service() -> None:
    assert _outside(_gradq_imports("ui"), ("gradq.ui", "gradq.service")) == []


def test_nothing_but_cli_imports_cli() -> None:
    folders = [f for f in FLOORS if f != "cli"]
    assert [bad for f in folders for bad in _inside(_gradq_imports(f), ("gradq.cli",))] == []


@pytest.mark.parametrize("path", _modules("cli", "service", "workers", "train", "nn", "ui"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_a_long_module_says_why(path: Path) -> None:
    """Over MAX_LINES lines only with LONG_PHRASE in the module's opening docstring."""
    text = path.read_text()
    lines = text.count("\n") + (not text.endswith("\n"))
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert LONG_PHRASE in " ".join(doc.split()), (
        f"{path.relative_to(ROOT)} has {lines} lines: split it, or say in its opening "
        f"docstring why it is '{LONG_PHRASE} ...'")


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links(page: Path) -> list[str]:
    """The targets of the page's Markdown links and images that are not URLs or anchors."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file(page: Path) -> None:
    broken = [t for t in _relative_links(page)
              if not (page.parent / t.split("#")[0]).exists()]
    assert broken == [], f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_the_link_check_reads_links_and_images(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("[a](docs/x.md#y) ![i](img.png) [u](https://e.org) [h](#top)\n"
                    "```\n[no](inside.md)\n```\n")
    assert _relative_links(page) == ["docs/x.md#y", "img.png"]
