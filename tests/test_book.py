"""The book builds in strict mode, and renders in headless Chromium with its figures and no broken internal link."""

import functools
import html
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory) -> Path:
    """Build a copy of the book (so the working tree is untouched) with warnings as errors."""
    root = tmp_path_factory.mktemp("book")
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("_build"))
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    command = [str(jupyter_book), "build", "book", "--config", "_config.yml", "--path-output", "book", "-W", "-n"]
    result = subprocess.run(command + ["--keep-going"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, f"strict book build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return root / "book" / "_build" / "html"


class LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])


def parse(path: Path) -> LinkParser:
    parser = LinkParser()
    parser.feed(path.read_text(errors="replace"))
    return parser


def test_every_page_of_the_toc_is_rendered(html_dir):
    for page in ["index.html", "reproduce.html"] + [
        f"notebooks/{p.stem}.html" for p in (REPO / "notebooks").glob("[0-9]*.ipynb")
    ]:
        assert (html_dir / page).exists(), page


def test_no_broken_internal_link_or_anchor(html_dir):
    broken = []
    for page in html_dir.rglob("*.html"):
        for href in parse(page).links + parse(page).images:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith("mailto:"):
                continue  # external: not ours to check offline
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.exists():
                broken.append(f"{page.relative_to(html_dir)} -> {href}")
            elif parts.fragment and target.suffix == ".html" and parts.fragment not in parse(target).ids:
                broken.append(f"{page.relative_to(html_dir)} -> {href} (no such anchor)")
    assert not broken, "\n".join(broken)


class LoggingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[tuple[str, int]] = []

    def log_request(self, code="-", size="-"):
        self.requests.append((unquote(urlsplit(self.path).path), int(code)))

    def log_message(self, format, *args):  # keep the test output quiet
        pass


def book_pages(html_dir: Path) -> list[str]:
    """Every page a reader reaches from the table of contents (index.html only redirects to the first)."""
    skip = {"index.html", "genindex.html", "search.html"}
    return sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
                  if "_static" not in p.parts and "_sources" not in p.parts and p.name not in skip)  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package `chromium`; .ci/run installs it)")
def test_chromium_shows_every_page_clean_at_1280_px(html_dir, tmp_path):
    """Every page, as Chromium renders it 1280 px wide (`tests/page_audit.js`): every image loads (the server
    answers 200), every figure has a numbered caption, no raw LaTeX, no Python reprs, no error output, and no
    table wider than the content column."""
    pages = book_pages(html_dir)
    script = (REPO / "tests" / "page_audit.js").read_text().replace("PAGES", json.dumps(pages))
    (html_dir / "_page_audit.html").write_text(f'<pre id="report">pending</pre><script>{script}</script>')
    LoggingHandler.requests = []
    handler = functools.partial(LoggingHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/_page_audit.html"
        flags = [*CHROMIUM_FLAGS, f"--virtual-time-budget={8000 * len(pages)}", f"--user-data-dir={tmp_path}"]
        dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=600)
    finally:
        server.shutdown()
    found = re.search(r'<pre id="report">(.*?)</pre>', dom.stdout, re.S)
    assert found and found.group(1) != "pending", f"the audit did not finish:\n{dom.stderr[-2000:]}"
    report = json.loads(html.unescape(found.group(1)))
    assert sorted(report) == pages
    problems = {
        page: {key: value for key, value in seen.items() if value and key != "column"} for page, seen in report.items()
    }
    assert not any(problems.values()), json.dumps({p: v for p, v in problems.items() if v}, indent=1)
    served: dict[str, set[int]] = {}
    for path, code in LoggingHandler.requests:
        served.setdefault(path, set()).add(code)
    for page in pages:
        for src in parse(html_dir / page).images:
            path = unquote(urlsplit(urljoin(f"{url.rsplit('/', 1)[0]}/{page}", src)).path)
            assert 200 in served.get(path, set()), f"{page}: the browser did not load {src}"


def test_formulas_render_offline_from_a_local_mathjax(html_dir):
    page = (html_dir / "notebooks" / "05_pref_factorization.html").read_text()
    scripts = [src for src in re.findall(r'<script[^>]*src="([^"]+)"', page) if "mathjax" in src.lower()]
    assert scripts and all(not urlsplit(src).netloc for src in scripts), scripts  # no CDN
    assert all((html_dir / "notebooks" / unquote(urlsplit(src).path)).resolve().exists() for src in scripts)
