"""The docs-site check fails on each kind of thing it looks for: a site of one real page (rendered by .ci/site.py from a
processed notebook) passes, and breaking a link, an anchor, an image, a formula, or saving a figure or a widget as text,
or a page the navigation does not reach, each makes it report that problem. Needs Chromium and Playwright
(.ci/browser_setup.sh) and pandoc; CI has them."""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


needs = pytest.mark.skipif(not (Path("/usr/bin/chromium").exists() and shutil.which("pandoc")
                                and importlib.util.find_spec("playwright")),
                           reason="needs Chromium, Playwright and pandoc (.ci/browser_setup.sh, apt-get install pandoc)")


PAGES = ["index.html", "prior.html"]  # the pages read in the browser: the landing page, a pillar with equations


@pytest.fixture(scope="module")
def small_site(tmp_path_factory):
    "The whole site rendered from the processed notebooks (made first if missing); the checks read two of its pages."
    if not (ROOT / "_proc" / "03_prior.ipynb").exists():
        subprocess.run([sys.executable, ROOT / ".ci" / "docs.py"], cwd=ROOT, check=True, capture_output=True)
    site = tmp_path_factory.mktemp("site")
    load("site").render(ROOT / "_proc", site)
    return site


def problems_after(site: Path, tmp_path: Path, pages: list[str], change) -> list[str]:
    broken = tmp_path / "site"
    shutil.copytree(site, broken)
    for page in pages:
        path = broken / page
        path.write_text(change(path.read_text()))
    return load("site_check").check_site(broken, only=PAGES)[0]


@needs
def test_the_real_pages_pass(small_site):
    problems, pages = load("site_check").check_site(small_site, only=PAGES)
    assert problems == [] and pages == PAGES, problems


@needs
@pytest.mark.parametrize("change, expected", [
    (lambda html: html.replace("</main>", '<a href="nowhere.html">x</a></main>'), "broken link 'nowhere.html'"),
    (lambda html: html.replace("</main>", '<a href="prior.html#no-such-section">x</a></main>'), "broken anchor"),
    (lambda html: html.replace("</main>", '<img src="figures/missing.png"></main>'), "image does not load"),
    (lambda html: html.replace("</main>", "<p>the rate $\\lambda_0 = 5$ here</p></main>"), "formula left as raw TeX"),
    (lambda html: html.replace("</main>", "<pre>&lt;Figure size 640x480 with 1 Axes&gt;</pre></main>"),
     "a figure saved as text"),
    (lambda html: html.replace("</main>", "<pre>VBox(children=(IntSlider(value=3),))</pre></main>"),
     "a widget saved as text"),
    (lambda html: html.replace("</main>", '<pre class="error">Traceback (most recent call last):</pre></main>'),
     "error output"),
], ids=["link", "anchor", "image", "formula", "figure-as-text", "widget-as-text", "traceback"])
def test_each_kind_of_breakage_is_reported(small_site, tmp_path, change, expected):
    problems = problems_after(small_site, tmp_path, ["prior.html"], change)
    assert any(expected in problem for problem in problems), problems


@needs
def test_a_page_the_navigation_does_not_reach_is_reported(small_site, tmp_path):
    problems = problems_after(small_site, tmp_path, PAGES,  # the prior's entry gone from every page's navigation
                              lambda html: html.replace('<li><a href="prior.html" class=current>', '<li><a>')
                                               .replace('<li><a href="prior.html">', '<li><a>'))
    assert any("prior.html: no navigation entry reaches this page" in problem for problem in problems), problems


@needs
def test_a_navigation_entry_without_a_page_fails_the_render(small_site, tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "sidebar.yml").write_text("website:\n  sidebar:\n    contents:\n      - gone.ipynb\n")
    with pytest.raises(SystemExit, match="names notebooks that are not in"):
        load("site").render(proc, tmp_path / "out")
