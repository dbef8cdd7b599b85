"""The book builds in strict mode, and renders in headless Chromium with its figures and no broken internal link."""

import functools
import http.server
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
    "--virtual-time-budget=8000",
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


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package `chromium`; .ci/run installs it)")
def test_chromium_renders_the_first_notebook_with_its_figure(html_dir, tmp_path):
    LoggingHandler.requests = []
    handler = functools.partial(LoggingHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = sorted((html_dir / "notebooks").glob("01_*.html"))[0]
        url = f"http://127.0.0.1:{server.server_port}/{page.relative_to(html_dir).as_posix()}"
        flags = CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]
        dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        shot = tmp_path / "page.png"
        subprocess.run(
            [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,2400", url],
            capture_output=True,
            timeout=120,
        )
    finally:
        server.shutdown()
    assert "plus" in dom.stdout and "<h1" in dom.stdout, dom.stderr[-2000:]
    images = [src for src in parse(page).images if src.endswith(".png")]
    assert images, "the page has a figure"
    served: dict[str, set[int]] = {}
    for path, code in LoggingHandler.requests:
        served.setdefault(path, set()).add(code)
    for src in images:
        path = urlsplit(urljoin(url, src)).path
        assert 200 in served.get(unquote(path), set()), f"the browser did not load {src}: {served}"
        assert (html_dir / unquote(path).lstrip("/")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.exists() and shot.stat().st_size > 20_000, "the screenshot is blank or missing"


def test_formulas_render_offline_from_a_local_mathjax(html_dir):
    page = (html_dir / "notebooks" / "05_pref_factorization.html").read_text()
    scripts = [src for src in re.findall(r'<script[^>]*src="([^"]+)"', page) if "mathjax" in src.lower()]
    assert scripts and all(not urlsplit(src).netloc for src in scripts), scripts  # no CDN
    assert all((html_dir / "notebooks" / unquote(urlsplit(src).path)).resolve().exists() for src in scripts)
