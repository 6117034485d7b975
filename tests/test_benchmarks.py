"""The benchmark scripts run end to end at CI-safe sizes (timings are not checked here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_train_step_benchmark_tiny(tmp_path, capsys):
    import train_step

    assert train_step.main(["--size", "tiny", "--seq", "16", "--steps", "3", "--warmup", "1", "--profile", "kahan_eager",
                            "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "kernels of one kahan_eager update" in out and "aten::mm" in out  # where the time goes
    assert "fp32_eager" in out and "kahan_eager" in out and "master_eager" in out
    rows = {r["variant"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    # `loop` times hyperfit train's own update; on a CPU that is the fp32 loop, so the same trajectory.
    assert len(rows["loop"]["losses"]) == 3 and rows["loop"]["losses"][-1] < rows["loop"]["losses"][0]
    assert rows["loop"]["losses"] == pytest.approx(rows["fp32_eager"]["losses"], rel=1e-6)
    # No `plain` among the CPU defaults: the table and the JSON name the reference they really used.
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["reference"] == doc["baseline"] == "fp32_eager"
    assert rows["fp32_eager"]["max_dloss_vs_ref"] == 0.0 and rows["loop"]["max_dloss_vs_ref"] < 1e-5
    header = [line for line in out.splitlines() if line.startswith("variant ")][0]
    assert "plain" not in header and "x fp32_eager" in header and "max|Δloss| vs fp32_eager" in header
    assert "plain did not run" in out and "0.0%" not in out  # and MFU is "–" on a CPU, not 0 %


@pytest.mark.parametrize("flag", ["--variants", "--profile"])
def test_train_step_refuses_unknown_variants_before_building_anything(flag, monkeypatch, capsys):
    import train_step

    def must_not_run(*args, **kwargs):
        raise AssertionError("a model was built for an unknown variant")

    monkeypatch.setattr(train_step, "build_model", must_not_run)
    monkeypatch.setattr(train_step, "run_variant", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        train_step.main([flag, "typo_kahan,kahan"])
    assert exit_info.value.code == 2  # argparse's usage error
    err = capsys.readouterr().err
    assert "'typo_kahan'" in err and "fp32_eager, plain, compile_model, compile, loop, master, kahan" in err


def test_train_step_bare_profile_means_every_variant_run():
    import train_step

    assert train_step.parse_args(["--profile", "--device", "cpu"]).profile == train_step.CPU_VARIANTS
    assert train_step.parse_args(["--variants", "kahan,loop", "--profile"]).profile == ("kahan", "loop")
    assert train_step.parse_args(["--profile", "loop,kahan_eager"]).profile == ("loop", "kahan_eager")
    assert train_step.parse_args([]).profile == ()


def test_train_step_reference_is_the_first_row_when_plain_did_not_run(tmp_path, capsys):
    import train_step

    assert train_step.main(["--variants", "kahan_eager,fp32_eager", "--seq", "16", "--steps", "2", "--warmup", "1",
                            "--split-steps", "1", "--device", "cpu", "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["reference"] == "kahan_eager" and doc["baseline"] == "fp32_eager"
    assert [r["max_dloss_vs_ref"] == 0.0 for r in doc["rows"]] == [True, False]
    header = [line for line in out.splitlines() if line.startswith("variant ")][0]
    assert "x fp32_eager" in header and "x kahan_eager" in header and "max|Δloss| vs kahan_eager" in header
    assert "plain" not in header and "reference kahan_eager loss:" in out


def test_train_step_reference_is_plain_when_it_ran():
    import train_step

    rows = [{"variant": "kahan"}, {"variant": "plain", "error": "OOM"}, {"variant": "compile"}]
    assert train_step.references([r for r in rows if "error" not in r]) == (rows[0], rows[0])  # failed: not it
    rows[1].pop("error")
    assert train_step.references(rows) == (rows[1], rows[1])
    rows.append({"variant": "fp32_eager"})
    assert train_step.references(rows) == (rows[1], rows[3])


def test_gpu_suite_reports_a_failing_part(tmp_path):
    env = {**os.environ, "SIZE": "tiny", "STEPS": "3", "PARTS": "train", "VARIANTS": "fp32_eager", "T_TRAIN": "1",
           "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "benchmarks/gpu_suite.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "== train FAILED (rc 124: timed out after 1 s" in done.stdout
    assert "   train FAILED" in done.stdout.split("== summary:")[1]
    assert "command not found" not in done.stderr  # no nvidia-smi on a CPU machine is no error


def test_gpu_suite_refuses_an_unknown_part_before_running_any(tmp_path):
    env = {**os.environ, "PARTS": "train tran", "OUT": str(tmp_path)}
    done = subprocess.run(["bash", "benchmarks/gpu_suite.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "unknown part 'tran'" in done.stderr and "== train" not in done.stdout


def test_generate_benchmark_tiny(tmp_path, capsys):
    import generate as bench

    assert bench.main(["--size", "tiny", "--contexts", "8", "--new", "64", "--profile", "--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    assert "kernels of one eager call" in out and "aten::" in out
    out = out[: out.index("kernels of one eager call")]  # the timing table comes before the profile
    assert "generate" in out and "100.0%" in out and "%" in out.splitlines()[-1]
    eager = [l for l in out.splitlines() if l.startswith("eager ")][0]
    assert eager.endswith("100.0%")  # the fast path gives generate()'s tokens (CPU, fp32)
    blocked = [l for l in out.splitlines() if l.startswith("eager_block ")][0]
    assert blocked.endswith("100.0%")  # ... and, with the citation blocker, generate()'s blocked tokens
    changed = [l for l in out.splitlines() if l.startswith("  eager_block:")][0]
    assert float(changed.rsplit(" ", 1)[1]) > 0.1  # the blocker really changed the continuations


def test_master_weights_follow_fp32_adamw_while_the_model_holds_bf16():
    torch.manual_seed(0)
    w0 = torch.rand(4096) * 0.02 + 0.01  # fp32 values, not bf16-representable
    model = torch.nn.Linear(4096, 1, bias=False)
    model.weight.data = w0.clone().view(1, -1)
    param = model.weight
    from master_adamw import MasterAdamW

    opt = MasterAdamW.convert(model, lr=1e-6, weight_decay=0.1)
    assert param.dtype == torch.bfloat16 and model.weight is param  # same parameter object, cast in place
    ref = torch.nn.Parameter(w0.clone().view(1, -1))
    ref_opt = torch.optim.AdamW([ref], lr=1e-6, weight_decay=0.1)
    for i in range(300):
        grad = torch.randn(1, 4096) * (1 + i % 3)
        param.grad, ref.grad = grad.bfloat16(), grad.bfloat16().float()  # what autocast's backward yields
        opt.step()
        ref_opt.step()
    master = opt.state[param]["master"]
    assert (ref.detach() - w0).abs().mean() > 5e-6  # it moved, by less than the bf16 spacing (~6e-5)
    torch.testing.assert_close(master, ref.detach(), rtol=1e-6, atol=1e-8)  # fp32 AdamW, to fp32 rounding
    assert torch.equal(param.detach(), master.bfloat16())  # the model computes with the rounded masters
    with pytest.raises(ValueError, match="master weights must be fp32 copies"):
        MasterAdamW([param], [master.bfloat16()])
