import pytest
import torch

from hyperfit.config import ConfigError, load_config
from hyperfit.errors import TrainError
from hyperfit.training import local_batch_size
from hyperfit.training.optim import KahanAdamW


def run(opt_cls, w0, steps=300, **kw):
    w = torch.nn.Parameter(w0.clone())
    opt = opt_cls([w], lr=1e-6, **kw)
    for _ in range(steps):
        w.grad = torch.ones_like(w)  # a steady gradient: every step moves each weight by ~lr
        opt.step()
    return w, opt


def test_kahan_keeps_lr_1e6_updates_that_bf16_rounds_away():
    torch.manual_seed(0)
    # Typical weight magnitudes (bf16 spacing ~6e-5, 60× the lr), exactly representable in bf16.
    w0 = (torch.rand(4096) * 0.02 + 0.01).bfloat16().float()
    ref, _ = run(torch.optim.AdamW, w0, weight_decay=0.0)                      # fp32 master weights
    plain, _ = run(torch.optim.AdamW, w0.bfloat16(), weight_decay=0.0)         # bf16, no compensation
    kahan, opt = run(KahanAdamW, w0.bfloat16())
    moved = (ref.detach() - w0).abs().mean()
    assert moved > 2.5e-4  # the fp32 run really moved
    assert torch.equal(plain.detach(), w0.bfloat16())  # every update lost: the failure the guard prevents
    comp = opt.state[kahan]["kahan_comp"].float()
    # Follows the fp32 trajectory to a few % (the bf16 compensation buffer rounds too; with this steady
    # gradient that error is systematic, the worst case), where plain bf16 keeps 0 % of it.
    err = (kahan.detach().float() + comp - ref.detach()).abs().max()
    assert err < 0.06 * moved
    assert (kahan.detach() != w0.bfloat16()).float().mean() > 0.9  # and the bf16 weights themselves moved


def test_kahan_needs_bf16_weights_and_is_named_in_the_error():
    with pytest.raises(ConfigError, match=r"adamw_kahan keeps updates on bf16 weights .*, but model.dtype=float32"):
        load_config(None, ["data.source=x", "train.optimizer=adamw_kahan"])
    load_config(None, ["data.source=x", "train.optimizer=adamw_kahan", "model.dtype=bfloat16"])
    with pytest.raises(ConfigError, match="train.optimizer='sgd' must be one of adamw, adamw_kahan, "):
        load_config(None, ["data.source=x", "train.optimizer=sgd"])


def test_more_ranks_than_the_batch_is_an_error_that_names_the_options():
    cfg = load_config(None, ["data.source=x"]).train
    assert [local_batch_size(cfg, r, 2000) for r in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(TrainError, match=r"16 processes but train.batch_size=8.*--num_processes 8.*fsdp2.yaml"):
        local_batch_size(cfg, 16, 2000)


def test_training_with_kahan_bf16_weights_and_activation_checkpointing(tmp_path, tiny_llama, corpus_file):
    from safetensors.torch import load_file

    from hyperfit.training import train
    from test_train import prepared, step_losses

    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "model.dtype=bfloat16", "train.optimizer=adamw_kahan",
                        "train.activation_checkpointing=true", "train.probe_every=0", "train.epochs=4")
    train(cfg.train, cfg.model, run)  # the precision guard lets bf16 weights through only in this mode
    losses = step_losses(run)
    assert losses[-1] < losses[0] - 0.1
    weights = load_file(run.final / "model.safetensors")
    assert all(w.dtype == torch.bfloat16 for w in weights.values())


@pytest.mark.slow
def test_compiled_kahan_step_matches_eager_and_keeps_lr_1e6_updates():
    # train.compile (default on CUDA) compiles the step over the whole tensor list. Inductor keeps a value
    # cast to bf16 and back in fp32 unless told to emulate the cast; the compensation (that cast's rounding
    # error) then came out as zero and lr-1e-6 updates were lost again. Caught here, on CPU.
    torch.manual_seed(0)
    w0 = (torch.rand(4096) * 0.02 + 0.01).bfloat16().float()
    ref, _ = run(torch.optim.AdamW, w0, weight_decay=0.0)
    eager, eager_opt = run(KahanAdamW, w0.bfloat16())
    compiled, opt = run(KahanAdamW, w0.bfloat16(), compile=True)
    assert torch.equal(compiled.detach(), eager.detach())
    assert torch.equal(opt.state[compiled]["kahan_comp"], eager_opt.state[eager]["kahan_comp"])
    err = (compiled.detach().float() + opt.state[compiled]["kahan_comp"].float() - ref.detach()).abs().max()
    assert err < 0.06 * (ref.detach() - w0).abs().mean()
