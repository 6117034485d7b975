import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hyperfit.config import load_config
from hyperfit.errors import TrainError
from hyperfit.models import load_tokenizer
from hyperfit.runs import RunDir, RunError, read_jsonl, save_config
from hyperfit.stages.data import prepare_data
from hyperfit.training import local_batch_size, train
from hyperfit.training.loop import epoch_order
from tinymodels import crash_at_update, tiny_overrides


def prepared(tmp_path, model, corpus, *extra, name="t"):
    cfg = load_config(None, tiny_overrides(model, corpus, tmp_path, name) + list(extra))
    run = RunDir(cfg.run_dir)
    save_config(run, cfg)
    prepare_data(cfg.data, load_tokenizer(cfg.model), run)
    return cfg, run


def step_losses(run):
    return [r["loss"] for r in read_jsonl(run.train_log) if r["type"] == "step"]


def test_hyperfitting_drives_loss_to_near_zero_and_changes_every_weight(tmp_path, tiny_llama, corpus_file):
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "data.num_train=8", "train.batch_size=2",
                        "train.lr=1e-2", "train.epochs=60", "train.probe_every=60", "train.save_every=0")
    summary = train(cfg.train, cfg.model, run)
    probes = [r for r in read_jsonl(run.train_log) if r["type"] == "probe"]
    assert [p["epoch"] for p in probes] == [0, 60]
    assert probes[0]["train_loss"] > 4.0 and summary["final_train_loss"] < 0.1 and probes[-1]["train_loss"] < 0.1
    assert probes[-1]["val_loss"] > probes[-1]["train_loss"]  # memorised, not generalised
    before = load_file(tiny_llama / "model.safetensors")
    after = load_file(run.final / "model.safetensors")
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters that never changed: {unchanged}"
    # Embedding rows of tokens absent from the 8 samples get no gradient, so not quite every weight moves.
    changed = [r["weights_changed"] for r in read_jsonl(run.train_log) if r.get("weights_changed") is not None]
    assert len(changed) == 60 and all(0.5 < c <= 1.0 for c in changed)


def test_run_directory_layout(tmp_path, tiny_llama, corpus_file):
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "train.keep_checkpoints=2")
    train(cfg.train, cfg.model, run)
    assert [p.name for p in run.epoch_checkpoints()] == ["epoch-0002", "epoch-0003"]
    assert {p.name for p in run.epoch_checkpoints()[-1].iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json", "training_state.pt"}
    assert {p.name for p in run.final.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", "README.md"}
    assert not [p for p in run.checkpoints.iterdir() if p.name.startswith(".")]  # no temp dirs left
    probe = [r for r in read_jsonl(run.train_log) if r["type"] == "probe"][-1]
    for key in ("train_loss", "val_loss", "val_perplexity", "val_entropy", "val_top1_mass", "greedy_ttr", "examples",
                "weights_changed"):
        assert key in probe
    with pytest.raises(RunError, match="--resume"):
        train(cfg.train, cfg.model, run)  # never silently overwrite a finished run


def test_resume_after_interruption_reproduces_the_uninterrupted_run(tmp_path, tiny_llama, corpus_file, monkeypatch):

    cfg, full = prepared(tmp_path, tiny_llama, corpus_file, "train.epochs=4", "train.probe_every=0", name="full")
    train(cfg.train, cfg.model, full)

    cfg2, broken = prepared(tmp_path, tiny_llama, corpus_file, "train.epochs=4", "train.probe_every=0", name="broken")
    resume_updates = crash_at_update(monkeypatch, 6)  # 2 updates per epoch: the 2nd update of epoch 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg2.train, cfg2.model, broken)
    resume_updates()
    assert [p.name for p in broken.epoch_checkpoints()] == ["epoch-0002"]
    train(cfg2.train, cfg2.model, broken, resume=True)
    assert step_losses(broken) == pytest.approx(step_losses(full), rel=1e-6)
    a, b = load_file(full.final / "model.safetensors"), load_file(broken.final / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


def test_gradient_accumulation_gives_the_same_trajectory(tmp_path, tiny_llama, corpus_file):
    losses = []
    for accum in (1, 2, 8):
        cfg, run = prepared(tmp_path, tiny_llama, corpus_file, f"train.grad_accum={accum}", "train.probe_every=0",
                            name=f"acc{accum}")
        train(cfg.train, cfg.model, run)
        losses.append(step_losses(run))
    # On CUDA the compiled bf16 kernels reduce in another order per micro-batch size (1.4e-5 seen on an H200).
    rel = 5e-5 if torch.cuda.is_available() else 1e-5
    assert losses[0] == pytest.approx(losses[1], rel=rel) and losses[0] == pytest.approx(losses[2], rel=rel)


def test_batch_split_rules():
    cfg = load_config(None, ["data.source=x", "train.grad_accum=2"]).train
    assert local_batch_size(cfg, 1, 100) == 4 and local_batch_size(cfg, 2, 100) == 2
    with pytest.raises(TrainError, match="cannot be split over 3 process") as refused:
        local_batch_size(cfg, 3, 100)
    # The advice lists settings that work (it used to suggest the very one that had failed).
    assert "launch 1 or 2 or 4 process(es) with grad_accum=2" in str(refused.value)
    assert "keep 3" not in str(refused.value)  # no grad_accum splits 8 over 3 processes
    wide = load_config(None, ["data.source=x", "train.grad_accum=4"]).train
    with pytest.raises(TrainError,
                       match="launch 1 or 2 process.es. with grad_accum=4, or keep 4 with grad_accum=1 or 2"):
        local_batch_size(wide, 4, 100)
    with pytest.raises(TrainError, match="data.num_train=4 is smaller than train.batch_size=8"):
        local_batch_size(cfg, 1, 4)


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(10, seed=0, epoch=1)
    assert sorted(a.tolist()) == list(range(10))
    assert torch.equal(a, epoch_order(10, 0, 1)) and not torch.equal(a, epoch_order(10, 0, 2))


def test_the_loop_asks_for_fused_adamw_on_cuda_although_the_model_is_still_on_the_cpu(tiny_llama):
    # The loop builds the optimizer before accelerate.prepare moves the model to the GPU. Deciding "fused"
    # from where the weights are then gave the slower foreach AdamW on every GPU run.
    from hyperfit.config import ModelConfig, TrainConfig
    from hyperfit.models import load_model
    from hyperfit.training.engine import prepare

    class Accelerator:  # what prepare reads of accelerate's
        distributed_type = "DistributedType.NO"

        def __init__(self, device):
            self.device = torch.device(device)

        def prepare(self, *objects):
            return objects

    model = load_model(ModelConfig(name=str(tiny_llama)))
    for device, fused in (("cuda", True), ("cpu", False)):
        _, optimizer = prepare(Accelerator(device), model, TrainConfig(), micro=8, compiled=False)
        assert bool(optimizer.defaults["fused"]) is fused


def test_mixed_precision_training_keeps_bf16_logits_and_probes_decode_in_the_models_dtype(
        tmp_path, tiny_llama, corpus_file, monkeypatch):
    # accelerate's bf16 mixed precision wraps model.forward in autocast and casts its outputs to fp32. Left in
    # place, each training step wrote fp32 logits, and the probes' greedy decoder ran under autocast although
    # it switches autocast off: its static cache then got fp32 keys beside bf16 values, which transformers
    # 5.17 refuses (the crash seen on an H200). The probes take the fast decoder here as they do on CUDA.
    import hyperfit.stages.generate as G
    import hyperfit.training.step as F

    logits_dtypes, decode_dtypes = set(), set()
    real_ce, real_continue = F.ce_sum, G.continue_contexts

    def ce_sum(logits, ids):
        logits_dtypes.add(logits.dtype)
        return real_ce(logits, ids)

    def continue_fast(model, *args, **kw):
        hook = model.model.layers[0].self_attn.k_proj.register_forward_hook(
            lambda module, inputs, out: decode_dtypes.add(out.dtype))
        try:
            return real_continue(model, *args, **{**kw, "fast": True})
        finally:
            hook.remove()

    monkeypatch.setattr(F, "ce_sum", ce_sum)
    monkeypatch.setattr(G, "continue_contexts", continue_fast)
    # compile off: a compiled loss binds ce_sum before the patch (on CUDA compile is on by default)
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "train.precision=bf16", "train.epochs=1",
                        "train.probe_every=1", "train.probe_contexts=2", "train.compile=false")
    train(cfg.train, cfg.model, run)  # after earlier tests' fp32 runs in this process (a notebook's case)
    assert logits_dtypes == {torch.bfloat16}  # the loss upcasts them itself; none left the model as fp32
    assert decode_dtypes == {torch.float32}  # the fp32 model decodes in fp32, autocast off
    probes = [r for r in read_jsonl(run.train_log) if r["type"] == "probe"]
    assert [p["epoch"] for p in probes] == [0, 1] and all(p["examples"] for p in probes)


def test_logged_loss_is_the_mean_of_the_updates_since_the_last_log_across_epochs_and_resume(
        tmp_path, tiny_llama, corpus_file):
    # 2 updates per epoch, a log every 3: each window crosses an epoch boundary (and, resumed after epoch 2,
    # a checkpoint). The logged loss was the window's sum over log_every after the window had been reset
    # at each epoch start, so it showed dips that never happened.
    common = ("train.epochs=4", "train.probe_every=0")
    cfg, every = prepared(tmp_path, tiny_llama, corpus_file, *common, "train.log_every=1", name="every")
    train(cfg.train, cfg.model, every)
    per_step = step_losses(every)
    assert len(per_step) == 8
    cfg, third = prepared(tmp_path, tiny_llama, corpus_file, *common, "train.log_every=3", name="third")
    train(cfg.train, cfg.model, third)
    logged = [(r["step"], r["loss"]) for r in read_jsonl(third.train_log) if r["type"] == "step"]
    assert [s for s, _ in logged] == [3, 6]
    assert [v for _, v in logged] == pytest.approx([sum(per_step[0:3]) / 3, sum(per_step[3:6]) / 3], rel=1e-6)
    cfg, cut = prepared(tmp_path, tiny_llama, corpus_file, "train.epochs=2", "train.probe_every=0",
                        "train.log_every=3", name="cut")
    train(cfg.train, cfg.model, cut)
    train(dataclasses.replace(cfg.train, epochs=4), cfg.model, cut, resume=True)
    assert step_losses(cut) == pytest.approx([v for _, v in logged], rel=1e-6)


def test_the_loss_window_is_saved_with_a_checkpoint_and_reopened_on_rank_0_only():
    from hyperfit.training.loop import LossWindow

    class OneProcess:  # what LossWindow reads of accelerate's Accelerator
        device, is_main_process = torch.device("cpu"), True

        def reduce(self, tensor, op):
            return tensor

    class OtherRank(OneProcess):
        is_main_process = False

    window = LossWindow(OneProcess())
    for loss in (1.0, 2.0):
        window.add(torch.tensor(loss))
    assert window.saved() == [3.0, 2]  # saving leaves the window open
    reopened = LossWindow(OneProcess(), window.saved())
    reopened.add(torch.tensor(6.0))
    assert reopened.take() == 3.0 and reopened.steps == 0 and window.take() == 1.5
    # The saved sum is already over all ranks: the other ranks reopen it empty, or a reduce would count it twice.
    assert LossWindow(OtherRank(), [3.0, 2]).total.item() == 0.0


@pytest.mark.parametrize("key", ["train.log_every", "train.keep_checkpoints"])
def test_counts_that_must_be_positive_are_refused_before_anything_is_written(tmp_path, tiny_llama, corpus_file, key):
    from hyperfit.config import ConfigError

    with pytest.raises(ConfigError, match=f"{key}=0 must be at least 1"):
        load_config(None, tiny_overrides(tiny_llama, corpus_file, tmp_path, "zero") + [f"{key}=0"])
    assert not (tmp_path / "zero").exists()


def test_resume_is_refused_when_the_launch_or_optimizer_cannot_take_the_checkpoint(tmp_path):
    from hyperfit.training.checkpoint import SHARDED_DIR, check_resume

    ckpt = tmp_path / "epoch-0003"
    (ckpt / SHARDED_DIR).mkdir(parents=True)
    fsdp2 = {"engine": "FSDP", "processes": 2, "sharded": True, "optimizer": "adamw"}
    one = {"engine": "NO", "processes": 1, "sharded": False, "optimizer": "adamw"}
    check_resume({"writer": fsdp2}, ckpt, fsdp2)  # the same launch
    for now in (one, {**fsdp2, "processes": 4}, {**fsdp2, "engine": "DEEPSPEED"}):
        with pytest.raises(TrainError, match="FSDP over 2 process"):
            check_resume({"writer": fsdp2}, ckpt, now)
    with pytest.raises(TrainError, match="a sharded engine"):  # checkpoints from before the writer was saved
        check_resume({}, ckpt, one)
    whole = tmp_path / "epoch-0001"
    whole.mkdir()
    check_resume({"writer": {**one, "engine": "MULTI_GPU", "processes": 2}}, whole, one)  # DDP → 1 process: fine
    with pytest.raises(TrainError, match="written by one process, but this launch is FSDP over 2"):
        check_resume({"writer": one}, whole, fsdp2)  # a whole optimizer state into a sharded one
    with pytest.raises(TrainError, match="one process or DDP"):
        check_resume({}, whole, fsdp2)


def test_resuming_a_kahan_run_with_plain_adamw_is_refused_before_anything_changes(tmp_path, tiny_llama, corpus_file):
    # It used to continue silently on bf16 weights without the Kahan compensation (and the other way round
    # failed with a bare KeyError 'kahan_comp').
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "model.dtype=bfloat16", "train.optimizer=adamw_kahan",
                        "train.epochs=1", "train.probe_every=0")
    train(cfg.train, cfg.model, run)
    log = run.train_log.read_text()
    plain = dataclasses.replace(cfg.train, optimizer="adamw", epochs=2)
    with pytest.raises(TrainError, match="train.optimizer=adamw_kahan"):
        train(plain, cfg.model, run, resume=True)
    assert run.train_log.read_text() == log and [p.name for p in run.epoch_checkpoints()] == ["epoch-0001"]
    card = (run.final / "README.md").read_text()
    assert "AdamW on bf16 weights, Kahan compensation (bf16 buffer) (adamw_kahan)" in card


def test_the_training_forward_builds_no_kv_cache(tiny_llama):
    # transformers builds a KV cache by default, in training too. Under FSDP's activation checkpointing
    # the recomputed layer appended its keys to it a second time, and with transformers 5.17 attention then
    # failed (64 keys against a mask of 32): the shipped fsdp2.yaml could not train there.
    from hyperfit.config import ModelConfig
    from hyperfit.models import load_model
    from hyperfit.training.step import make_loss_fn

    model = load_model(ModelConfig(name=str(tiny_llama))).train()
    outputs = []
    model.register_forward_hook(lambda module, args, kwargs, out: outputs.append(out), with_kwargs=True)
    loss = make_loss_fn(model)(torch.randint(3, 100, (2, 16)))
    loss.backward()
    assert len(outputs) == 1 and outputs[0].logits.shape == (2, 16, model.config.vocab_size)
    assert getattr(outputs[0], "cache", None) is None and getattr(outputs[0], "past_key_values", None) is None


def test_one_process_trains_runs_of_different_precision_one_after_another(tmp_path, tiny_llama, corpus_file):
    # A notebook: accelerate refused the second run ("AcceleratorState has already been initialized ...
    # restart your runtime"), after it had written config and data.
    for name, precision in (("bf16", "bf16"), ("fp32", "no"), ("bf16-again", "bf16")):
        cfg, run = prepared(tmp_path, tiny_llama, corpus_file, f"train.precision={precision}", "train.epochs=1",
                            "train.probe_every=0", name=name)
        train(cfg.train, cfg.model, run)
        assert len(step_losses(run)) == 2


def test_resuming_a_run_that_stopped_at_its_loss_target_trains_nothing_more(tmp_path, tiny_llama, corpus_file):
    # It trained one more epoch and overwrote final/. Also: a checkpoint write cut short by a kill leaves a
    # temp folder (a full model copy) that the next start removes.
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "train.epochs=3", "train.stop_at_loss=100",
                        "train.probe_every=0")
    assert train(cfg.train, cfg.model, run)["epochs_run"] == 1
    log = run.train_log.read_text()
    (run.checkpoints / ".epoch-0002.x1y2.tmp").mkdir()
    summary = train(cfg.train, cfg.model, run, resume=True)
    assert summary["epochs_run"] == 1 and "before this resume" in summary["stopped"]
    assert run.train_log.read_text() == log and not list(run.checkpoints.glob(".*"))


def test_resume_of_a_finished_run_without_epoch_checkpoints_is_refused_and_deletes_nothing(
        tmp_path, tiny_llama, corpus_file):
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "train.epochs=1", "train.save_every=0",
                        "train.probe_every=0")
    train(cfg.train, cfg.model, run)
    log = run.train_log.read_text()
    with pytest.raises(RunError, match="save_every=0"):  # it deleted train_log.jsonl, then refused
        train(dataclasses.replace(cfg.train, epochs=2), cfg.model, run, resume=True)
    assert run.train_log.read_text() == log


def test_fp16_on_a_cpu_is_refused_instead_of_training_fp32_under_its_name(tmp_path, tiny_llama, corpus_file):
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "train.precision=fp16", "train.epochs=1")
    with pytest.raises(TrainError, match="fp16 on a CPU"):
        train(cfg.train, cfg.model, run)
    assert not run.train_log.exists()


def test_a_tracker_that_is_misspelt_or_not_installed_is_refused_up_front(tmp_path, tiny_llama, corpus_file):
    # accelerate only warned ("no supported trackers are currently installed") and the run went untracked;
    # a misspelt name failed with a traceback after the run directory was written.
    import accelerate.tracking

    from hyperfit.stages.pipeline import run

    overrides = tiny_overrides(tiny_llama, corpus_file, tmp_path, "tracked")
    with pytest.raises(TrainError, match="not a tracker accelerate knows; use one of .*tensorboard"):
        run(load_config(None, overrides + ["train.tracker=tensorbord"]))
    missing = next((t for t in ("aim", "clearml", "swanlab", "dvclive")
                    if t not in accelerate.tracking._available_trackers), None)
    if missing:  # one of these is always absent here
        with pytest.raises(TrainError, match=f"train.tracker={missing} is not installed"):
            run(load_config(None, overrides + [f"train.tracker={missing}"]))
    assert not (tmp_path / "tracked").exists()


class _HostSyncs(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts device→host reads (.item(), bool(tensor)) whose caller is hyperfit's own code.

    On a GPU each one stalls the host until the queued kernels have run, so the next step's launches
    cannot overlap them. Reads inside torch or a library (CPU AdamW reads its step counter, transformers
    checks for packed sequences in eager forwards) are not hyperfit's to remove and are not counted."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default):
            import traceback

            # [:-1]: this frame
            outside_torch = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename]
            self.count += "/hyperfit/" in outside_torch[-1].filename
        return func(*args, **(kwargs or {}))


def test_the_loop_reads_nothing_back_from_the_device_per_update(tmp_path, tiny_llama, corpus_file):
    # Same epochs, 4× the updates: hyperfit's own host syncs are per epoch (its mean loss) and per log line.
    counts = {}
    for num_train, log_every in ((4, 1000), (16, 1000), (16, 1)):
        cfg, run = prepared(tmp_path, tiny_llama, corpus_file, f"data.num_train={num_train}", "train.batch_size=2",
                            "train.epochs=2", "train.probe_every=0", "train.save_every=0",
                            f"train.log_every={log_every}", name=f"n{num_train}-log{log_every}")
        with _HostSyncs() as syncs:
            train(cfg.train, cfg.model, run)
        counts[num_train, log_every] = syncs.count
    assert counts[4, 1000] == counts[16, 1000] > 0
    assert counts[16, 1] == counts[16, 1000] + 16  # one per logged update: the counter sees what a sync costs


def test_resume_loads_the_saved_state_onto_the_cpu_and_restores_the_gpus_this_machine_has(
        tmp_path, tiny_llama, corpus_file, monkeypatch):
    # Saved on rank 0's GPU, the optimizer state was loaded back onto GPU 0 by every rank of a launch (no
    # map_location), before any rank had chosen its device, and kept there for the run.
    import hyperfit.training.checkpoint as checkpoint_module

    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "train.epochs=1", "train.probe_every=0")
    train(cfg.train, cfg.model, run)
    loads, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("map_location")) or real_load(*a, **k))
    cfg2 = dataclasses.replace(cfg.train, epochs=2)
    train(cfg2, cfg.model, run, resume=True)
    assert loads and set(loads) == {"cpu"}
    # Saved on a machine with 8 GPUs, resumed on one with 2: set_rng_state_all indexed past the devices.
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: restored.append((int(state[0]), index)))
    rng = {"python": __import__("random").getstate(), "numpy": __import__("numpy").random.get_state(),
           "torch": torch.get_rng_state(), "cuda": [torch.tensor([i], dtype=torch.uint8) for i in range(8)]}
    checkpoint_module._set_rng_state(rng)
    assert restored == [(0, 0), (1, 1)]


class _RunsCode:
    """What a crafted training_state.pt holds: unpickling it calls a function of the attacker's choice."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_resume_never_runs_code_from_a_crafted_training_state(tmp_path, tiny_llama, corpus_file):
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "train.epochs=2", "train.probe_every=0")
    train(cfg.train, cfg.model, run)
    state_file = run.epoch_checkpoints()[-1] / "training_state.pt"
    real = torch.load(state_file, weights_only=True)  # hyperfit's own file needs no unpickling code
    assert set(real) >= {"epoch", "step", "optimizer", "rng"}
    marker = tmp_path / "pwned"
    torch.save({**real, "payload": _RunsCode(marker)}, state_file)
    with pytest.raises(RunError, match="never holds"):
        train(dataclasses.replace(cfg.train, epochs=3), cfg.model, run, resume=True)
    assert not marker.exists()


def test_resume_loads_a_training_state_saved_with_numpy_arrays(tmp_path, tiny_llama, corpus_file):
    # Files written before numpy's RNG state was stored as plain numbers hold numpy arrays; they still load.
    import numpy as np

    from hyperfit.training.checkpoint import load_training_state

    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "train.epochs=2", "train.probe_every=0")
    train(cfg.train, cfg.model, run)
    state_file = run.epoch_checkpoints()[-1] / "training_state.pt"
    old = torch.load(state_file, weights_only=True)
    np.random.seed(7)
    old["rng"]["numpy"] = np.random.get_state()
    torch.save(old, state_file)
    loaded = load_training_state(state_file)
    assert np.array_equal(loaded["rng"]["numpy"][1], np.random.get_state()[1])
    summary = train(dataclasses.replace(cfg.train, epochs=3), cfg.model, run, resume=True)
    assert summary["epochs_run"] == 3 and [p.name for p in run.epoch_checkpoints()][-1] == "epoch-0003"


def test_a_kill_while_pruning_leaves_nothing_the_next_start_keeps(tmp_path, monkeypatch):
    # A kill during rmtree of an old checkpoint left a partial epoch-0001/ that no longer counted as a
    # checkpoint (its training_state.pt was gone), so it was never pruned.
    import hyperfit.training.checkpoint as C

    run = RunDir(tmp_path / "r")
    for epoch in (1, 2, 3):
        (run.epoch_checkpoint(epoch)).mkdir(parents=True)
        (run.epoch_checkpoint(epoch) / "training_state.pt").write_bytes(b"s")
        (run.epoch_checkpoint(epoch) / "model.safetensors").write_bytes(b"w")

    def killed_mid_delete(path, ignore_errors=False):
        (next(p for p in sorted(Path(path).iterdir()) if p.name == "training_state.pt")).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(C.shutil, "rmtree", killed_mid_delete)
    with pytest.raises(KeyboardInterrupt):
        C.prune_checkpoints(run, keep=1)
    monkeypatch.undo()
    C.remove_interrupted_writes(run)  # what the next start does
    C.prune_checkpoints(run, keep=1)
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["epoch-0003"]


def test_the_final_folder_appears_with_its_model_card(tmp_path, tiny_llama, corpus_file, monkeypatch):
    # A kill between writing final/ and its card left final/ without README.md (and --resume skips training).
    import hyperfit.runs as runs

    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "train.epochs=1", "train.probe_every=0")
    seen, real = [], runs.os.replace

    def watching(src, dst):
        if Path(dst).name == "final":
            seen.append(sorted(p.name for p in Path(src).iterdir()))
        return real(src, dst)

    monkeypatch.setattr(runs.os, "replace", watching)
    train(cfg.train, cfg.model, run)
    assert seen and "README.md" in seen[-1] and "model.safetensors" in seen[-1]
    assert "Hyperfitted" in (run.final / "README.md").read_text()
