"""The benchmark scripts run end to end at CI-safe sizes (timings are not checked here)."""

import json
import sys
from pathlib import Path

import pytest
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


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
