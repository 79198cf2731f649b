"""The README stays a newcomer's page that points into the documentation site (mkdocs.yml, docs/)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _nav_pages(nav: list) -> list[str]:
    pages: list[str] = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def _docs_pages() -> list[str]:
    return sorted(p.name for p in (ROOT / "docs").glob("*.md"))


def test_readme_is_short() -> None:
    n = len(README.splitlines())
    assert n <= 250, f"README.md has {n} lines; move sections into docs/ pages (limit 250)"


def test_readme_links_every_docs_page() -> None:
    linked = set(re.findall(r"\]\(docs/([^)#\s]+\.md)(?:#[^)]*)?\)", README))
    missing = [name for name in _docs_pages() if name not in linked and name != "index.md"]  # index.md: the site's home
    assert not missing, f"README.md links no docs page {missing}"
    assert all((ROOT / "docs" / name).is_file() for name in linked), sorted(n for n in linked if not (ROOT / "docs" / n).is_file())


def test_every_docs_page_is_in_the_site_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_pages(config["nav"])
    assert sorted(set(nav)) == _docs_pages(), "mkdocs.yml's nav and the .md files of docs/ differ"
    assert len(nav) == len(set(nav)), "a page is twice in mkdocs.yml's nav"
    assert config.get("strict") is True


def test_readme_test_command_is_the_ci_command_and_builds_the_docs() -> None:
    blocks = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    command = next(b for b in blocks if "pytest" in b)
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci_lines, ".ci/run does not run the README's test command"
    steps = [s.strip() for s in command.split("&&")]
    assert "mkdocs build --strict" in steps
    assert steps.index("mkdocs build --strict") < next(i for i, s in enumerate(steps) if "pytest" in s)
