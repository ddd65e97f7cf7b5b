"""report.html: the heatmap's data at a large scale (binned, light), and the micro demo's page
opened in headless Chromium: no console error, the heatmap and the fits drawn, the tables with the
examples' texts present, a screenshot saved. Without Chromium the browser test is skipped, except
where FJ_REQUIRE_BROWSER=1 (CI installs Debian's `chromium` and sets it)."""

import html
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from forgetting_jax.analysis.matrix_file import read_matrix_file
from forgetting_jax.matrix.html_report import heatmap_data, render_html

# Recorded into the page's <html data-errors="..."> by the test's copy: uncaught errors and
# console.error calls.
CAPTURE = ("<script>(function(){var root=document.documentElement;function note(m){root.setAttribute('data-errors',"
           "(root.getAttribute('data-errors')||'')+m+';')}window.addEventListener('error',function(e){note(e.message)});"
           "var ce=console.error;console.error=function(){note(Array.prototype.join.call(arguments,' '));"
           "return ce.apply(console,arguments)}})();</script>")


def chromium() -> str | None:
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if found is None and os.environ.get("FJ_REQUIRE_BROWSER") == "1":
        pytest.fail("FJ_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
    return found


def test_a_large_matrix_is_binned_and_the_page_stays_light():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(100, 100_000)).astype(np.float32)
    z[:, 7] = 5.0  # the most forgotten example: first, and named by its bin
    ids = [f"ex{j}" for j in range(z.shape[1])]
    shown = heatmap_data(z, [f"t{i}" for i in range(100)], ids, None, None)
    assert shown["z"].shape == (100, 2000) and shown["binned"] == 50
    assert shown["columns"][0].startswith("50 examples, e.g. ex7")
    means = np.nanmean(z, 0)
    order = np.argsort(-means, kind="stable")
    np.testing.assert_allclose(shown["z"][:, 1], z[:, order[50:100]].mean(1)[np.argsort(-z.mean(1), kind="stable")],
                               rtol=1e-5)
    data = {"Z": z, "tasks": [f"t{i}" for i in range(100)], "example_ids": ids}
    page = render_html("big", data, {"r2": {"additive": 0.5, "svd": {"1": 0.6}}})
    assert len(page) < 15e6


@pytest.mark.slow
def test_the_micro_report_renders_in_headless_chromium(micro_matrix, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on PATH")
    workdir, summary = micro_matrix
    path = os.path.join(summary.experiment_dir, "report.html")
    with open(path, encoding="utf-8") as f:
        page = f.read()
    with open(os.path.join(workdir, "report.html"), encoding="utf-8") as f:
        assert f.read() == page  # W/report.html is the experiment's copy
    probe = tmp_path / "report.html"
    probe.write_text(page.replace("<head>", "<head>" + CAPTURE, 1), encoding="utf-8")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=15000", "--window-size=1400,2400"]
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html_tag = re.search(r"<html[^>]*>", dom.stdout).group(0)
    assert "data-errors" not in html_tag, html_tag
    assert dom.stdout.count('class="main-svg"') >= 4  # the heatmap and the fits, each two layers
    assert "heatmaplayer" in dom.stdout or "hm" in dom.stdout
    data = read_matrix_file(summary.matrix_path)
    top = int(np.argmax(np.nanmean(data["Z"], 0)))
    text = html.escape(" ".join(data["example_texts"][top].split())[:30], quote=False)
    assert data["example_ids"][top] in dom.stdout and text in dom.stdout
    assert "Tasks that forget the most" in dom.stdout and "Most forgotten examples per task" in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run(flags + [f"--screenshot={shot}", probe.as_uri()], capture_output=True, timeout=180, check=True)
    assert shot.stat().st_size > 20_000
