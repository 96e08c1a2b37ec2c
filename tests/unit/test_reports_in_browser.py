"""report.html and compare.html open in headless Chromium (Debian's `chromium`, installed by `make`): the page
loads without script errors, offline, and every plot is an image that decoded with a real size; a screenshot is
taken and is not blank."""

import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make installs it with apt-get)")

CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.target.src || e)), true);
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !i.complete || i.naturalWidth < 50 || i.naturalHeight < 50).map(i => i.alt);
  const out = document.createElement('pre');
  out.id = 'tunesmith-check';
  out.textContent = JSON.stringify({images: imgs.length, bad: bad, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def open_in_chromium(page, tmp_path):
    """Load `page` (with the check script) in headless Chromium without network; return (check, screenshot)."""
    import json

    probe = tmp_path / f"probe-{page.name}"
    html = page.read_text()
    probe.write_text(html.replace("<head>", "<head>" + CHECK, 1))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--proxy-server=127.0.0.1:9", "--virtual-time-budget=5000"]  # no network: any remote fetch fails
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="tunesmith-check">(.*?)</pre>', dom, re.S)
    assert found, f"the page did not finish loading in Chromium: {dom[:500]}"
    shot = tmp_path / f"{page.stem}.png"
    subprocess.run(flags + ["--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    return json.loads(found.group(1).replace("&quot;", '"')), shot


def assert_not_blank(png):
    import matplotlib.image as mpimg

    pixels = mpimg.imread(str(png))
    assert pixels.shape[0] > 100 and pixels.std() > 0.01, "the screenshot is blank"


def test_report_html_renders_with_its_plots(tiny_bert, sentiment_file, make_config, tmp_path):
    from tunesmith import api

    run = api.train(make_config(tiny_bert, sentiment_file, "classify", report={"html": True}, eval={"probes": ["Great."]}),
                    out=tmp_path / "run")
    check, shot = open_in_chromium(run.dir / "report.html", tmp_path)
    assert check["errors"] == [] and check["bad"] == []
    assert check["images"] >= 3  # loss curve and the two confusion matrices
    assert_not_blank(shot)
    assert re.search(r"peak memory</td><td>[\d,]+ MB process RSS", (run.dir / "report.html").read_text())
    assert re.search(r"machine</td><td>CPU .+ \(\w+.*\), \d+ threads; (bf16 autocast|float32 weights)",
                     (run.dir / "report.html").read_text())


def test_compare_html_renders_with_its_plots(tiny_bert, sentiment_file, make_config, tmp_path):
    from tunesmith.experiments.compare import compare

    compare(make_config(tiny_bert, sentiment_file, "classify"), ["lora", "head"], out=tmp_path / "cmp")
    check, shot = open_in_chromium(tmp_path / "cmp" / "compare.html", tmp_path)
    assert check["errors"] == [] and check["bad"] == []
    assert check["images"] >= 4  # metric vs parameters, time, memory; losses overlaid
    assert_not_blank(shot)
