"""Every relative link of the documentation resolves (file and anchor), every docs page is in the
index, and the README's table of config groups is the one ``conf/`` gives."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from conftest import REPO
from doc_pages import doc_files, split_page

from recsys_cli.compose import config_groups, group_options

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as dashes,
    repeats numbered."""
    _, prose = split_page(page.read_text(encoding="utf-8"))
    anchors: set[str] = set()
    for _, line in prose:
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))
        slug = "".join(
            ch for ch in text.lower() if ch in " -_" or unicodedata.category(ch)[0] in "LN"
        ).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    anchors |= set(re.findall(r'<a (?:name|id)="([^"]+)"', page.read_text(encoding="utf-8")))
    return anchors


def page_links(page: Path) -> list[tuple[int, str]]:
    _, prose = split_page(page.read_text(encoding="utf-8"))
    links = []
    for number, line in prose:
        line = re.sub(r"`[^`]*`", "", line)
        links += [(number, target) for target in LINK.findall(line)]
    return links


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path):
    problems = []
    for number, target in page_links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            problems.append(f"{number}: {target} (no such file)")
            continue
        if anchor and path.suffix == ".md" and anchor not in heading_anchors(path):
            problems.append(f"{number}: {target} (no heading with anchor #{anchor} in {path.name})")
    assert not problems, f"{page.relative_to(REPO)}:\n  " + "\n  ".join(problems)


def test_every_page_is_linked_from_the_docs_index():
    index = REPO / "docs" / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for _, t in page_links(index)}
    pages = [p for p in (REPO / "docs").rglob("*.md") if p != index]
    missing = [str(p.relative_to(REPO)) for p in pages if p.resolve() not in linked]
    assert not missing, f"docs/README.md does not link {missing}"


def test_anchor_rule_matches_github():
    page = REPO / "docs" / "datasets.md"
    assert "your-own-log-datatabular-recsys_clidataformatstabularpy" in heading_anchors(page)


# ---- the README's table of config groups


TABLE_START, TABLE_END = "<!-- config-groups:start -->", "<!-- config-groups:end -->"
# Hydra's own group
NOT_LISTED = {"hydra"}


def default_choices() -> dict[str, str]:
    """The option each group gets when nothing is chosen (the defaults lists of conf/)."""
    from hydra import compose, initialize_config_dir

    from recsys_cli.config_paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        choices = compose("train", return_hydra_config=True).hydra.runtime.choices
    return {k: v for k, v in choices.items() if v is not None and not k.startswith("hydra")}


def generated_rows(descriptions: dict[str, str]) -> list[str]:
    defaults = default_choices()
    rows = ["| group | default | options | what it chooses |", "|---|---|---|---|"]
    for group in config_groups():
        if group in NOT_LISTED:
            continue
        default = defaults.get(group)
        options = ", ".join(f"`{o}`" for o in group_options(group) if o != default)
        rows.append(
            f"| `{group}` | {f'`{default}`' if default else '-'} | {options or '-'} | "
            f"{descriptions.get(group, 'TODO: what this group chooses')} |"
        )
    return rows


def readme_table() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert TABLE_START in text and TABLE_END in text, "README.md lost its config-groups markers"
    body = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    return [line for line in body.strip().splitlines() if line.startswith("|")]


def test_readme_config_groups_table_is_generated_from_conf():
    rows = readme_table()
    descriptions = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        descriptions[cells[0].strip("`")] = cells[-1]
    expected = generated_rows(descriptions)
    assert all(d and not d.startswith("TODO") for d in descriptions.values())
    assert rows == expected, (
        "README.md's config-groups table differs from conf/; replace it with:\n"
        + "\n".join(expected)
    )
