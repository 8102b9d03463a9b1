"""The HTML report in a real headless browser (Debian's chromium): the ranking table is in the DOM, every image
decoded (an inline script sets data-images-loaded), and a screenshot renders."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from PIL import Image
from test_report_fixture_store import make_sweep

from reports import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--virtual-time-budget=5000"]


def chromium(*args, profile) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does)")
def test_report_renders_in_a_headless_browser(tmp_path):
    store = make_sweep(tmp_path)
    index = build_report("lartpc-test", store["uri"], tmp_path / "report", log_to_parent=False)
    dom = chromium("--dump-dom", index.as_uri(), profile=tmp_path / "profile").stdout
    assert '<table id="ranking">' in dom
    assert 'data-images-loaded="true"' in dom, "an <img> did not decode in the browser"
    count = int(dom.split('data-image-count="')[1].split('"')[0])
    assert count == dom.count("<img ")
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,3000", index.as_uri(), profile=tmp_path / "profile")
    with Image.open(shot) as im:
        assert im.size == (1400, 3000)
        assert len(set(im.convert("L").resize((70, 150)).getdata())) > 10  # not a blank page
