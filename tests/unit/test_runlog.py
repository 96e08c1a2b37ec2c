"""report/runlog.py: the peak memory of a run is measured on POSIX (resource) and on systems without the
`resource` module (Windows: psutil's peak working set), and importing the module never needs `resource`."""

import subprocess
import sys
import types

from tunesmith.report import runlog


def test_runlog_imports_and_measures_without_the_resource_module():
    probe = ("import sys; sys.modules['resource'] = None; from tunesmith.report import runlog; "
             "print(sorted(runlog.peak_memory_mb()))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("["), out.stderr


def test_peak_memory_without_resource_comes_from_psutil(monkeypatch):
    assert runlog.peak_memory_mb()["peak_rss_mb"] > 0  # POSIX: getrusage
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` now raises ImportError, as on Windows
    info = types.SimpleNamespace(rss=2**20, peak_wset=300 * 2**20)  # psutil on Windows has peak_wset
    monkeypatch.setitem(sys.modules, "psutil", types.SimpleNamespace(Process=lambda: types.SimpleNamespace(memory_info=lambda: info)))
    assert runlog.peak_memory_mb()["peak_rss_mb"] == 300.0
    monkeypatch.setitem(sys.modules, "psutil", None)  # neither: the peak is left out, nothing fails
    assert "peak_rss_mb" not in runlog.peak_memory_mb()
