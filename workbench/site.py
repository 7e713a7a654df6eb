"""The review as a static site (MkDocs Material) under build/site, built from what is committed.

    python -m workbench.site            # build/site/index.html is the overview (opens offline)

Inputs, all in the repository (nothing is measured here, so the build takes seconds):
- review/*.md, review/img/    the rendered pages and plots (refreshed by ``workbench.review render``)
- review/pages.yml            the page list: the navigation, in reading order
- notebooks/*.ipynb           the notebooks with the outputs of the recorded run

Notebooks become ordinary pages: nbconvert's Markdown export, with TeX turned into MathML at build
time (latex2mathml), so formulas show without any script or network. The theme loads no web
fonts. ``review.html`` joins every page into one document for printing or mailing.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
REVIEW = ROOT / "review"
NOTEBOOKS = ROOT / "notebooks"
TEMPLATES = Path(__file__).resolve().parent / "templates"
SINGLE_PAGE = "review.md"  # every page in one document (printed to PDF by workbench.browser)

NOTEBOOK_LINK = re.compile(r"\]\(\.\./notebooks/(?P<stem>[\w-]+)\.ipynb(?P<anchor>#[^)]*)?\)")
MD_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
CODE = re.compile(r"(```.*?```|`[^`\n]+`)", re.S)
FENCED = re.compile(r"(```.*?```)", re.S)  # a link's text may hold inline code, so links skip only these
MATH = re.compile(r"\$\$(?P<block>.+?)\$\$|\$(?P<inline>[^$\n]+?)\$", re.S)


# ------------------------------------------------------------------------------------ pages

def page_sections(review: Path = REVIEW) -> List[Tuple[str, List[dict]]]:
    """(section, pages) in reading order, only pages that exist (pages.yml may name future ones)."""
    listed = yaml.safe_load((review / "pages.yml").read_text(encoding="utf-8"))
    out = []
    for sec in listed:
        present = [p for p in sec["pages"] if (review / p["file"]).is_file()]
        if present:
            out.append((sec["section"], present))
    return out


def _site_links(text: str) -> str:
    """Links that point outside review/ on GitHub, pointed at their pages in the site.

    A notebook has a page in the site; any other repository file (code, an example) does not, so
    its link becomes the file's path, written as code, which the reader finds in the repository.
    """
    text = NOTEBOOK_LINK.sub(lambda m: f"](notebooks/{m['stem']}.md{m['anchor'] or ''})", text)
    return _outside_code(text, lambda part: MD_LINK.sub(_repo_file_as_path, part), FENCED)


def _outside_code(text: str, change, code: "re.Pattern" = CODE) -> str:
    """Apply ``change`` to the Markdown outside code (spans and fenced blocks, or what ``code`` matches)."""
    parts = code.split(text)
    return "".join(part if i % 2 else change(part) for i, part in enumerate(parts))


def _repo_file_as_path(m: "re.Match") -> str:
    """``[text](../path)`` -> ``text (`path`)``, or just ``text`` when it already is the path."""
    target, text = m["target"], m["text"]
    if not target.startswith("../"):
        return m.group(0)
    path = target.split("#", 1)[0][len("../"):]
    return text if text.strip("`") == path else f"{text} (`{path}`)"


# -------------------------------------------------------------------------------- notebooks

def tex_to_mathml(markdown: str) -> str:
    """Replace $...$ and $$...$$ outside code with MathML (rendered by the browser itself)."""
    from latex2mathml.converter import convert

    def math(m: "re.Match") -> str:
        if m["block"] is not None:
            return "\n\n" + convert(m["block"].strip(), display="block") + "\n\n"
        return convert(m["inline"].strip())

    return _outside_code(markdown, lambda part: MATH.sub(math, part))


def notebook_page(path: Path, docs: Path) -> str:
    """Convert one executed notebook to a Markdown page (its images beside it); return its file."""
    import nbformat
    from nbconvert import MarkdownExporter

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = tex_to_mathml(cell.source)
    body, resources = MarkdownExporter().from_notebook_node(
        nb, resources={"output_files_dir": f"{path.stem}_files"})
    folder = docs / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in resources.get("outputs", {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    header = (f"<!-- generated from notebooks/{path.name} by workbench.site; edit the notebook -->\n\n")
    (folder / f"{path.stem}.md").write_text(header + body, encoding="utf-8")
    return f"notebooks/{path.stem}.md"


def notebook_title(path: Path) -> str:
    import nbformat
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


# ------------------------------------------------------------------------ single document

def single_page(sections: List[Tuple[str, List[dict]]], review: Path) -> str:
    """Every page in reading order as one Markdown document, links turned into anchors."""
    files = [p["file"] for _, pages in sections for p in pages]

    def relink(m: "re.Match") -> str:
        target, text = m["target"], m["text"]
        page, _, anchor = target.partition("#")
        if page in files:
            return f"[{text}](#{anchor or 'page-' + Path(page).stem.lower()})"
        if page.endswith(".ipynb"):  # a notebook has its own page in the site, not in the document
            return f"{text} (`{page[len('../'):] if page.startswith('../') else page}`)"
        return _repo_file_as_path(m)

    chunks = ["# Ревью кода: два кейса с доказательствами (всё на одной странице)\n"]
    for section, pages in sections:
        for p in pages:
            text = (review / p["file"]).read_text(encoding="utf-8")
            text = MD_LINK.sub(relink, text)
            # One level down: the document has its own title.
            text = re.sub(r"^(#{1,5}) ", r"#\1 ", text, flags=re.M)
            chunks.append(f'<a id="page-{Path(p["file"]).stem.lower()}"></a>\n\n{text}')
    return "\n\n".join(chunks)


# ------------------------------------------------------------------------------ the build

def stage_docs(docs: Path, review: Path = REVIEW, notebooks: Path = NOTEBOOKS) -> list:
    """Write the site's sources into ``docs``; return the navigation."""
    if docs.exists():
        shutil.rmtree(docs)
    docs.mkdir(parents=True)
    sections = page_sections(review)
    nav: list = []
    for section, pages in sections:
        entries = []
        for p in pages:
            text = _site_links((review / p["file"]).read_text(encoding="utf-8"))
            (docs / p["file"]).write_text(text, encoding="utf-8")
            entries.append({p["title"]: p["file"]})
        nav.append({section: entries})
    if (review / "img").is_dir():
        shutil.copytree(review / "img", docs / "img")
    nb_entries = [{notebook_title(path): notebook_page(path, docs)}
                  for path in sorted(notebooks.glob("*.ipynb")) if not path.name.startswith("_")]
    if nb_entries:
        nav.append({"Ноутбуки": nb_entries})
    (docs / SINGLE_PAGE).write_text(single_page(sections, review), encoding="utf-8")
    shutil.copy2(TEMPLATES / "extra.css", docs / "extra.css")
    return nav


SLUGIFY = "__SLUGIFY__"


def write_mkdocs_config(nav: list, docs: Path, site: Path, config: Path) -> None:
    cfg = {
        "site_name": "Ревью кода: два кейса с доказательствами",
        "docs_dir": str(docs), "site_dir": str(site), "use_directory_urls": False,
        "theme": {"name": "material", "language": "ru", "font": False,
                  "features": ["navigation.sections", "toc.follow", "content.code.copy"]},
        "nav": nav, "extra_css": ["extra.css"], "not_in_nav": f"/{SINGLE_PAGE}",
        "markdown_extensions": [
            "tables", "attr_list", "md_in_html",
            {"pymdownx.highlight": {"anchor_linenums": True}}, "pymdownx.superfences",
            {"toc": {"permalink": True, "slugify": SLUGIFY}},
        ],
        "plugins": ["search"],
        "validation": {"omitted_files": "warn", "absolute_links": "warn", "unrecognized_links": "warn"},
    }
    text = yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False)
    # Unicode heading ids: "C1-05 · Условие…" must not collide with the card's own id "c1-05".
    text = text.replace(SLUGIFY, "!!python/object/apply:pymdownx.slugs.slugify {kwds: {case: lower}}")
    config.write_text(text, encoding="utf-8")


def build(out: Path = BUILD, review: Path = REVIEW, notebooks: Path = NOTEBOOKS,
          strict: bool = True) -> Path:
    """Stage the sources and run MkDocs; return the site folder (index.html is the overview, from README.md)."""
    docs, site, config = out / "docs", out / "site", out / "mkdocs.yml"
    nav = stage_docs(docs, review, notebooks)
    write_mkdocs_config(nav, docs, site, config)
    cmd = [sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(config)]
    if strict:
        cmd.append("--strict")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"mkdocs build failed:\n{proc.stdout}\n{proc.stderr}")
    return site


def pages_of(site: Path) -> Dict[str, Path]:
    return {p.relative_to(site).as_posix(): p for p in site.rglob("*.html")}


if __name__ == "__main__":
    print(build() / "index.html")
