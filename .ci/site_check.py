"""Read every page of the rendered docs site in a real browser (Debian's Chromium through Playwright) and fail on what a
reader would trip over: a broken internal link or anchor, an image that does not load, a formula left as raw TeX, a
traceback or error output, the text form of a figure (`<Figure size …>`) or of a widget (`VBox(children=…`) where a
picture belongs, a page the navigation does not reach, or a navigation entry without a page. A full-page screenshot
of each page goes to tests/artifacts/site/ (ignored by git): look at them.

    python .ci/site_check.py [--site _site] [--screenshots tests/artifacts/site]

Works on this project's offline render (.ci/site.py → _site/) and on Quarto's (`nbdev_docs` → _docs/).
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
TEXT_FORMS = {"<Figure size": "a figure saved as text", "VBox(children=": "a widget saved as text",
              "HBox(children=": "a widget saved as text", "Traceback (most recent call last)": "a traceback"}
# TeX that a typeset page never shows as text: $…$ with a backslash command or a ^/_ inside, or a bare \command{
RAW_TEX = re.compile(r"\$[^$\n]*(\\[a-zA-Z]+|[_^])[^$\n]*\$|\\(frac|mathrm|mathcal|lambda|sigma|alpha|mathbb|left|right)\b")

# What the browser reports of a page: its text without code blocks, the images that failed, every link and every id.
PAGE_FACTS = """() => {
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, math').forEach(e => e.remove());
  return {
    text: clone.innerText,
    allText: document.body.innerText,
    brokenImages: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src')),
    links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
    navLinks: [...document.querySelectorAll('nav a[href], #quarto-sidebar a[href]')].map(a => a.getAttribute('href')),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    errors: document.querySelectorAll('pre.error, .cell-output-error').length,
  };
}"""


def page_problems(page: str, facts: dict, site: Path) -> list[str]:
    "What is wrong on one page, from what the browser saw."
    problems = [f"{page}: image does not load: {src}" for src in facts["brokenImages"]]
    if facts["errors"]:
        problems.append(f"{page}: {facts['errors']} error output(s)")
    for needle, what in TEXT_FORMS.items():
        if needle in facts["allText"]:
            problems.append(f"{page}: {what} ({needle!r})")
    for match in RAW_TEX.finditer(facts["text"]):
        problems.append(f"{page}: formula left as raw TeX: {match[0][:60]!r}")
    return problems


def link_target(page: Path, href: str, site: Path) -> tuple[Path, str] | None:
    "The file and anchor an internal link points to (None for external links)."
    parsed = urlparse(href)
    if parsed.scheme or href.startswith("//") or href.startswith("mailto:"):
        return None
    target = page if not parsed.path else (page.parent / unquote(parsed.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, parsed.fragment


def check_site(site: Path, screenshots: Path | None = None, only: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(problems, pages checked) of the site in `site`, read in Chromium; `only`: read just these pages (the targets of
    their links are still checked, their anchors from the target's HTML)."""
    from playwright.sync_api import sync_playwright
    site = site.resolve()
    every = sorted(p for p in site.rglob("*.html") if "site_libs" not in p.parts)
    pages = every if only is None else [site / name for name in only]
    problems, facts_of = [], {}
    if screenshots is not None and screenshots.exists():  # only this render's pages
        shutil.rmtree(screenshots)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route(re.compile(r"^https?://"), lambda route: route.abort())  # offline: the page must not need the web
        tab = context.new_page()
        for path in pages:
            name = path.relative_to(site).as_posix()
            tab.goto(path.as_uri(), wait_until="load")
            facts = tab.evaluate(PAGE_FACTS)
            facts_of[path] = facts
            problems += page_problems(name, facts, site)
            if screenshots is not None:
                shot = screenshots / (name[:-5].replace("/", "__") + ".png")
                shot.parent.mkdir(parents=True, exist_ok=True)
                tab.screenshot(path=str(shot), full_page=True)
        browser.close()
    reached = set()
    for path, facts in facts_of.items():
        name = path.relative_to(site).as_posix()
        for href in facts["links"]:
            target = link_target(path, href, site)
            if target is None:
                continue
            file, anchor = target
            if not file.exists():
                problems.append(f"{name}: broken link {href!r} (no {file.relative_to(site) if file.is_relative_to(site) else file})")
            elif anchor and anchor not in (facts_of[file]["ids"] if file in facts_of else
                                           re.findall(r'\bid="([^"]+)"', file.read_text(encoding="utf-8"))):
                problems.append(f"{name}: broken anchor {href!r} (no id {anchor!r} on that page)")
        for href in facts["navLinks"]:
            target = link_target(path, href, site)
            if target is not None:
                reached.add(target[0])
    index = site / "index.html"
    for path in pages:  # (with `only`, the pages read; their navigation is every page's)
        if path not in reached and path != index:
            problems.append(f"{path.relative_to(site).as_posix()}: no navigation entry reaches this page")
    return problems, [p.relative_to(site).as_posix() for p in pages]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default=str(ROOT / "_site"))
    parser.add_argument("--screenshots", default=str(ROOT / "tests" / "artifacts" / "site"))
    args = parser.parse_args()
    problems, checked = check_site(Path(args.site), Path(args.screenshots))
    for problem in problems:
        print(f"site_check: {problem}", file=sys.stderr)
    if problems:
        sys.exit(f"site_check: {len(problems)} problem(s) on {len(checked)} pages")
    print(f"site_check: {len(checked)} pages read in Chromium, no problem; screenshots in {args.screenshots}")
