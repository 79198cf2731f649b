"""``perf/step_time.py`` runs every one of its tables (on tiny inputs on the CPU, where (c)-(f)
are only checked to work: their figures are measured on a GPU).  Not a timed test: no figure is
compared with a target here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "perf" / "step_time.py"


def test_step_time_script_prints_every_table(tmp_path):
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--parts",
        *"abcdef",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--warmup",
        "1",
        "--models",
        "resnet18",
        "--opt-steps",
        "1",
        "--device",
        "cpu",
        "--size",
        "32x64",
        "--backbone",
        "resnet18",
        "--batch-size",
        "2",
        "--gpu-steps",
        "1",
        "--short-epochs",
        "1",
        "--short-train",
        "12",
        "--share",
        "2",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for title in [
        "(a) multidigits training step",
        "(b) AdaTask optimizer step alone",
        "(c) nyuv2 training step by method",
        "(d) nyuv2 ew step by precision",
        "(e) val metrics after 1 epochs",
        "(f) k trials sharing one device",
    ]:
        assert title in text, f"missing table {title!r}:\n{text}"
    # (a): every method appears once under adam; (b): the flat step is the per-parameter one bit for bit,
    # and agrees with the naive loop; the floor is printed.
    for method in ["ew", "gemtl", "imtl_g[rep]", "imtl_h[rep]", "nash_mtl[param]"]:
        assert re.search(rf"^{re.escape(method)}\s+adam\s+\d", text, re.M), method
    difference = float(re.search(r"max \|flat - loop\| after 2 steps (\S+)", text).group(1))
    assert difference < 1e-5
    assert "flat = per-parameter foreach bit for bit: True" in text
    assert re.search(r"memory-traffic floor: \S+ GB per step at \S+ GB/s \(a measured copy\) = \S+ ms", text)
    for row in ("AdamAdaTask (flat)", "per-parameter foreach", "naive loop (params x tasks)"):
        assert re.search(rf"^{re.escape(row)}\s+\d", text, re.M), row
    # (c): the methods of the targets and the plain AdaTask baseline; (d): the three settings.
    for row in [
        "ew                 adam_adatask",
        "imtl_g             adam",
        "imtl_h             adam",
        "plain adatask",
        "default (bf16, speedups)",
        "bf16 only",
        "plain fp32 (reference)",
    ]:
        assert row in text, row
    # (e): the same metrics for the three runs, all finite; (f): two workers ran and reported.
    metrics = re.findall(r"^val/\S+\s+(\S+)\s+(\S+)\s+(\S+)$", text, re.M)
    assert len(metrics) == 9 and all(float(v) == float(v) for row in metrics for v in row)
    sharing = re.search(r"^\s+2\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", text, re.M)
    assert sharing and float(sharing.group(2)) > 0 and float(sharing.group(3)) > 0
