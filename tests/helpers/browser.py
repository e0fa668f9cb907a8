"""A real headless browser (Debian's chromium, which .ci/run installs) rendering a page from disk."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium not found: .ci/run installs Debian's chromium (apt-get install chromium)")
    return found


def render(page: Path, work: Path, *, width: int = 1100, height: int = 2400) -> tuple[str, Path]:
    """(the DOM after rendering, a screenshot of it), the page opened as a file:// URL with no network."""
    browser, url = chromium(), page.resolve().as_uri()
    common = [browser, *FLAGS, f"--user-data-dir={work / 'profile'}", f"--window-size={width},{height}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    shot = work / "screenshot.png"
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    return dom, shot


class Shown(HTMLParser):
    """Text of the elements that carry `data-label` (the numbers a page shows), keyed by their data attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple, str] = {}
        self.classes: list[str] = []
        self._open: list[tuple | None] = []

    VOID = {"meta", "link", "br", "img", "input", "hr", "col", "source"}

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        attrs = dict(attrs)
        self.classes += (attrs.get("class") or "").split()
        key = None
        if "data-label" in attrs:
            key = (tag, attrs.get("class"), attrs.get("data-benchmark"), attrs["data-label"], attrs.get("data-metric"))
            self.values[key] = ""
        self._open.append(key)

    def handle_endtag(self, tag):
        if tag not in self.VOID and self._open:
            self._open.pop()

    def handle_data(self, data):
        for key in self._open:
            if key is not None:
                self.values[key] += data


def shown(dom: str) -> Shown:
    parser = Shown()
    parser.feed(dom)
    return parser
