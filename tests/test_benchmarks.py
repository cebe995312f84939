"""The benchmark scripts run end to end on small settings, and their two paths train to the same losses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> list[list[str]]:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [line.split() for line in result.stdout.splitlines()]


def _baseline_supported() -> bool:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from train_throughput import baseline_supported
    finally:
        sys.path.remove(str(BENCHMARKS))
    return baseline_supported()


@pytest.mark.slow
@pytest.mark.skipif(not _baseline_supported(), reason="the benchmark's baseline needs transformers >= 5.18")
def test_train_throughput_paths_agree_on_the_losses():
    rows = {line[1]: line for line in _run("train_throughput.py", "--samples", "32", "--rounds", "1", "--scenarios",
                                           "single") if line[:1] == ["single"]}  # fmt: skip
    baseline, ours = rows["baseline"], rows["llava_swap"]
    # columns: scenario, path, train samples/s, end-to-end samples/s, peak RSS, mean loss, held-out loss, 2 ratios
    assert float(ours[2]) > 0 and float(baseline[2]) > 0
    assert ours[5:7] == baseline[5:7]  # mean training loss and held-out loss, to the printed 4 decimals
    # The ratio columns' format only: the samples/s above are rounded, and a ratio of one short run is noise
    assert baseline[7:9] == ["1.00x", "1.00x"] and all(re.fullmatch(r"\d+\.\d\dx", ratio) for ratio in ours[7:9])


@pytest.mark.slow
def test_gpu_throughput_code_path_runs_on_tiny_shapes():
    rows = {line[0]: line for line in _run("gpu_throughput.py", "--tiny", "--steps", "3") if len(line) == 3}
    for path in ("baseline", "llava_swap"):
        assert float(rows[path][1]) > 0 and rows[path][2].endswith("%")


@pytest.mark.slow
def test_scale_benchmark_reports_disk_per_image_and_the_rss_ratio():
    lines = _run("scale.py", "--sizes", "40", "80")
    rows = [line for line in lines if line[:2] in (["|", "40"], ["|", "80"])]
    assert len(rows) == 2
    for row in rows:  # ... | disk per image (MB) | / features' size |: 576 x 1024 bf16 rows, headers < 1%
        assert float(row[-4]) == pytest.approx(576 * 1024 * 2 / 1e6, rel=0.01) and 1.0 <= float(row[-2]) < 1.01
    assert lines[-1][:3] == ["peak", "RSS", "80/40:"] and float(lines[-1][3]) > 0


def test_data_start_benchmark_times_every_step_and_scales_to_665k():
    lines = _run("data_start.py", "--records", "300", "--turns", "2")
    table = [[cell.strip() for cell in " ".join(line).strip("|").split("|")] for line in lines if line[:1] == ["|"]]
    steps = {cells[0]: cells[1:] for cells in table[1:]}  # after the header (the rule is one word: not a row)
    assert table[0] == ["step", "seconds", "records/s", "at 665k (s)"]
    assert list(steps) == ["load and check", "rows", "tokenize and check", "dataset", "first batch"]
    for name, (seconds, _, scaled) in steps.items():  # 2-decimal seconds, times 665k / 300 records
        factor = 1 if name == "first batch" else 665_000 / 300
        assert float(seconds) >= 0 and float(scaled) == pytest.approx(float(seconds) * factor, abs=0.006 * factor)
    held = next(line for line in lines if line[:4] == ["tokens", "and", "masks", "held:"])
    assert int(held[4].replace(",", "")) > 0
    assert lines[-1][:4] == ["after", "the", "check,", "665k:"] and float(lines[-1][4]) >= 0
