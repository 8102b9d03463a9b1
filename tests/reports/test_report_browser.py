"""The HTML report in a real headless browser (Debian's chromium): the ranking table is in the DOM and fits a
laptop screen, the sections of a finished sweep render (is the lead real?, systematics, GPU telemetry), every image
decoded (an inline script sets data-images-loaded), and a screenshot renders."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from fixtures_reports import RICH_SWEEP, make_rich_sweep

from reports import build_report

LAPTOP = (1366, 900)  # the usual laptop screen, in CSS pixels
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--virtual-time-budget=5000"]


def chromium(*args, profile) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does)")
def test_report_renders_in_a_headless_browser(tmp_path):
    store = make_rich_sweep(tmp_path / "store")
    index = build_report(RICH_SWEEP, store["uri"], tmp_path / "report", log_to_parent=False)
    dom = chromium(f"--window-size={LAPTOP[0]},{LAPTOP[1]}", "--dump-dom", index.as_uri(),
                   profile=tmp_path / "profile").stdout
    assert '<table id="ranking-table">' in dom
    assert 'data-images-loaded="true"' in dom, "an <img> did not decode in the browser"
    count = int(dom.split('data-image-count="')[1].split('"')[0])
    assert count == dom.count("<img ")
    width = float(dom.split('data-ranking-width="')[1].split('"')[0])
    assert 0 < width <= LAPTOP[0], f"the ranking table is {width} px wide"
    for anchor, content in (("lead", '<table id="lead-table">'), ("systematics", '<table id="syst-noisy-table">'),
                            ("systematics", 'alt="Systematics"'), ("telemetry", '<table id="gpu-table">'),
                            ("best", 'alt="ROC curves"')):
        part = dom.split(f'<h2 id="{anchor}">', 1)[1].split("<h2", 1)[0]
        assert content in part, (anchor, content)
    assert 'title="t01 resnet34 focal 0.003"' in dom  # the full run name behind the short id
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,3000", index.as_uri(), profile=tmp_path / "profile")
    with Image.open(shot) as im:
        assert im.size == (1400, 3000)
        assert len(np.unique(np.asarray(im.convert("L").resize((70, 150))))) > 10  # not a blank page
