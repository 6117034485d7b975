"""The benchmark scripts run end to end at CI-safe sizes (numbers are not checked here)."""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_train_step_benchmark_tiny(tmp_path, capsys):
    import train_step

    assert train_step.main(["--size", "tiny", "--seq", "16", "--steps", "3", "--warmup", "1",
                            "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "fp32_eager" in out and "kahan_eager" in out and "master_eager" in out and (tmp_path / "t.json").is_file()


def test_generate_benchmark_tiny(tmp_path, capsys):
    import generate as bench

    assert bench.main(["--size", "tiny", "--contexts", "8", "--new", "64", "--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    assert "generate" in out and "100.0%" in out and "%" in out.splitlines()[-1]
    eager = [l for l in out.splitlines() if l.startswith("eager ")][0]
    assert eager.endswith("100.0%")  # the fast path gives generate()'s tokens (CPU, fp32)
    blocked = [l for l in out.splitlines() if l.startswith("eager_block ")][0]
    assert blocked.endswith("100.0%")  # ... and, with the citation blocker, generate()'s blocked tokens
    changed = [l for l in out.splitlines() if l.startswith("  eager_block:")][0]
    assert float(changed.rsplit(" ", 1)[1]) > 0.1  # the blocker really changed the continuations
