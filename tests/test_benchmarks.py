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

    assert train_step.main(["--size", "tiny", "--seq", "16", "--steps", "3", "--warmup", "1",
                            "--profile", "kahan_eager", "--json", str(tmp_path / "t.json")]) == 0
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
    # On a CPU "peak GiB" is the process's max RSS, which never resets: the table and the JSON say so.
    assert doc["peak_kind"] == "process max RSS (CPU)" and "each row includes every row before it" in out


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


@pytest.mark.parametrize("argv, bad", [
    (["--variants", "fp32_eager,kahan_eager", "--baseline-steps", "2", "--steps", "4"], "--baseline-steps=2"),
    (["--warmup", "-1"], "--warmup=-1"),
    (["--steps", "2"], "--steps=2 must exceed --warmup=2"),
    (["--split-steps", "0", "--seq", "0"], "--split-steps=0"),
])
def test_train_step_refuses_step_counts_that_leave_nothing_to_time(argv, bad, monkeypatch, capsys):
    import train_step

    def must_not_run(*args, **kwargs):
        raise AssertionError("a model was built for step counts that cannot be timed")

    monkeypatch.setattr(train_step, "build_model", must_not_run)
    monkeypatch.setattr(train_step, "run_variant", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        train_step.main(argv + ["--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert bad in err and "use --" in err  # what is wrong, the value, the fix
    if "--seq" in argv:
        assert "--seq=0" in err  # every problem at once, not the first only


def test_train_step_times_fp32_eager_with_no_warmup(tmp_path):
    import train_step

    # fp32_eager runs --baseline-steps=1 update; with --warmup 0 that one update is the timed one.
    assert train_step.main(["--variants", "fp32_eager", "--steps", "3", "--baseline-steps", "1", "--warmup", "0",
                            "--seq", "8", "--split-steps", "1", "--device", "cpu",
                            "--json", str(tmp_path / "t.json")]) == 0
    row = json.loads((tmp_path / "t.json").read_text())["rows"][0]
    assert row["steps"] == 1 and row["s_per_step"] > 0
    # --baseline-steps only caps fp32_eager: without it, a small value is no error.
    assert train_step.parse_args(["--variants", "kahan_eager", "--baseline-steps", "1", "--device", "cpu"])


def test_mfu_counts_matmul_parameters_not_the_embedding_lookup(monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    import train_step
    from common import SIZES, build_model

    # Tiny shape by hand: per layer q 64·64 + k, v 64·32 each + o 64·64 = 12,288, MLP 3·64·128 = 24,576,
    # two norms 128: 36,992. Two layers + final norm 64 + head 512·64 = 32,768: 106,816. The input
    # embedding (another 32,768) is a lookup and costs no FLOPs.
    untied = build_model("tiny", "cpu")
    assert sum(p.numel() for p in untied.parameters()) == 139_584
    assert train_step.matmul_params(untied) == 106_816
    # Tied: one tensor, but the head's matmul still runs, so it is counted once.
    torch.manual_seed(0)
    tied = LlamaForCausalLM(LlamaConfig(**SIZES["tiny"], tie_word_embeddings=True))
    assert sum(p.numel() for p in tied.parameters()) == 106_816 and train_step.matmul_params(tied) == 106_816
    # One update of 8 × 16 tokens: (6·106,816 + 12·2 layers·64·16) per token × 128 tokens.
    assert train_step.step_flops(106_816, SIZES["tiny"], seq=16) == (640_896 + 24_576) * 128 == 85_180_416
    monkeypatch.setattr(train_step, "peak_flops", lambda device: 1e12)
    args = train_step.parse_args(["--seq", "16", "--device", "cpu"])
    row = {"params": 139_584, "matmul_params": 106_816, "s_per_step": 1e-3}
    assert train_step.mfu(row, args, "cpu") == pytest.approx(0.085180416)


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

    assert bench.main(["--size", "tiny", "--contexts", "8", "--new", "64", "--profile",
                       "--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    assert "kernels of one eager call" in out and "aten::" in out
    out = out[: out.index("kernels of one eager call")]  # the timing table comes before the profile
    assert "generate" in out and "100.0%" in out and "%" in out.splitlines()[-2]  # the last row, above the footnote
    eager = [l for l in out.splitlines() if l.startswith("eager ")][0]
    assert eager.endswith("100.0%")  # the fast path gives generate()'s tokens (CPU, fp32)
    blocked = [l for l in out.splitlines() if l.startswith("eager_block ")][0]
    assert blocked.endswith("100.0%")  # ... and, with the citation blocker, generate()'s blocked tokens
    changed = [l for l in out.splitlines() if l.startswith("  eager_block:")][0]
    assert float(changed.rsplit(" ", 1)[1]) > 0.1  # the blocker really changed the continuations
    assert json.loads((tmp_path / "g.json").read_text())["peak_kind"] == "process max RSS (CPU)"
    assert "peak GiB: process max RSS (CPU), which never resets" in out


def test_generate_fills_agreement_of_modes_timed_before_their_reference(tmp_path, capsys):
    import generate as bench

    assert bench.main(["--modes", "eager,generate", "--contexts", "2", "--new", "4", "--device", "cpu",
                       "--json", str(tmp_path / "g.json")]) == 0
    doc = json.loads((tmp_path / "g.json").read_text())
    eager = doc["rows"][0]  # timed before generate() ran, compared at the end: all of it, first token too
    assert (eager["agree_vs"], eager["agree"], eager["agree_first"]) == ("generate", 1.0, 1.0)
    assert doc["baseline"] == "generate" and "x generate" in capsys.readouterr().out


def test_generate_names_the_speed_baseline_when_generate_did_not_run(tmp_path, capsys):
    import generate as bench

    assert bench.main(["--modes", "eager_block,eager", "--contexts", "2", "--new", "4", "--device", "cpu",
                       "--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    header = [line for line in out.splitlines() if line.startswith("mode ")][0]
    assert "x eager_block" in header and "x generate" not in header
    assert "generate did not run: ratios are against eager_block" in out
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["baseline"] == "eager_block"
    # eager ran after eager_block: how much the blocker changed is filled in at the end.
    assert doc["rows"][0]["changed"] is not None and doc["rows"][0]["agree"] is None  # no generate_block ran


def test_blocker_refuses_comparison_corpora_larger_than_the_training_set(capsys):
    import blocker as bench

    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--samples", "10", "--compare-samples", "5", "50"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--compare-samples 50: more than --samples=10" in err and "use --samples 50" in err
    assert "--compare-samples 5 " not in err  # 5 of 10 is fine
    assert bench.parse_args(["--samples", "50", "--compare-samples", "5", "50"]).compare_samples == [5, 50]


@pytest.mark.parametrize("argv, bad", [(["--texts", "0"], "--texts=0 must be >= 2"),
                                       (["--texts", "1", "--sample", "0"], "--sample=0 must be >= 1")])
def test_bleu_refuses_counts_it_cannot_measure(argv, bad, capsys):
    import bleu as bench

    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2 and bad in capsys.readouterr().err


def test_bleu_benchmark_tiny(capsys):
    import bleu as bench

    bench.main(["--texts", "3", "--train", "3", "--sample", "3", "--words", "20"])
    out = capsys.readouterr().out
    assert "Self-BLEU: ours" in out and "Dataset BLEU: ours" in out and "estimated" not in out


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


def test_data_memory_benchmark_runs_and_the_stage_keeps_the_baselines_tokens():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks/data_memory.py"), "--sizes-mb", "0.2"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(root / "src")})
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [r[1] for r in rows] == ["baseline", "stage"] and all(r[-1] == "True" for r in rows)


def test_lowmem_numerics_on_stories260k(capsys):
    import lowmem_numerics as bench

    if not (bench.ASSETS / "stories260K").is_dir():
        pytest.skip(f"{bench.ASSETS / 'stories260K'} not found (../shared/assets beside the checkout)")
    torch.manual_seed(0)
    data = bench.token_batches(bench.ASSETS)
    rows = bench.bench_model("stories260K", bench.stories260k(bench.ASSETS), ["adamw", "adamw_kahan_sr", "adamw_kahan"],
                             data[:8, :64], data[8:10, :16], updates=3, small_updates=2)
    ref, sr, rtn = rows
    assert ref["guard"] == 1.0 and ref["drift"] == 0.0 and ref["agree"] == 1.0 and ref["loss_gap"] == 0.0
    assert 0.99 <= sr["guard"] <= 1.01 and rtn["guard"] < 0.99  # what the precision guard says on its weights
    assert sr["guard_passes"] and not rtn["guard_passes"]
    assert 0.9 < sr["kept"] < 1.1 and 0 < sr["drift"] < 0.5 and sr["loss_gap"] < 0.05
    assert "| stories260K | adamw_kahan_sr | 10.00 |" in capsys.readouterr().out


def test_lowmem_horizon_tables(tmp_path):
    out = tmp_path / "h.md"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/lowmem_horizon.py"), "--modes",
                          "adamw_kahan,adamw_kahan_sr", "--steps", "8,16", "--draws", "1", "--out", str(out)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert run.returncode == 0, run.stderr
    lines = out.read_text().splitlines()
    assert [line.count("|") for line in lines if line.startswith("| adamw_kahan_sr |")] == [4, 4]  # both tables
    # At the guard's 1,000 updates round-to-nearest Kahan is outside the bar, SR inside.
    assert lines[-2].startswith("| adamw_kahan |") and lines[-2].endswith("| 0 of 1 |")
    assert lines[-1].startswith("| adamw_kahan_sr |") and lines[-1].endswith("| 1 of 1 |")
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks/lowmem_horizon.py"), "--modes", "adamw_kahn"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert bad.returncode != 0 and "unknown ['adamw_kahn']" in bad.stderr
