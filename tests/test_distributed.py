"""Launched like a user would (`accelerate launch`, CPU processes over gloo), several processes do what one
does: 1 × 8 = 1 × (2 × 4 accumulated) = 2 processes × 4 in training; generation, evaluation, the whole
pipeline and compare write the one-process files; the shipped FSDP2 and ZeRO-3 configs (through
tests/engine_on_cpu.py) train, export and resume like the one-process loop."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hyperfit.runs import RunDir, read_jsonl
from hyperfit.stages.generate import generate
from test_train import prepared, step_losses
from tinymodels import ASSETS, needs_assets

REPO = Path(__file__).resolve().parents[1]
SRC = str(REPO / "src")


def shipped(name: str) -> str:
    return str(REPO / "configs" / "accelerate" / f"{name}.yaml")


def launch(nproc: int, *args: str, config: str | None = None, engine_on_cpu: bool = False,
           launch_args: tuple[str, ...] = (), processes_said: bool = True, script: str | None = None) -> str:
    """`accelerate launch --num_processes N ... -m hyperfit ARGS` in a subprocess, like a user would.

    No config: N CPU processes over gloo (`--multi_gpu` starts them through torchrun; ACCELERATE_USE_CPU
    makes them CPU processes, where `--cpu` would start only one). A config: the shipped engine on the GPUs,
    or with engine_on_cpu on CPU processes through tests/engine_on_cpu.py. `script`: a file run instead of
    `-m hyperfit` (it must call hyperfit's CLI). Checks that N processes ran.
    """
    with socket.socket() as s:  # a free port, so parallel test runs do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    if config is None or engine_on_cpu:
        env["ACCELERATE_USE_CPU"] = "true"
    where = ["--config_file", config] if config else ["--multi_gpu", "--num_machines", "1", "--mixed_precision",
                                                      "no", "--dynamo_backend", "no"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *where, *launch_args, "--num_processes", str(nproc),
           "--main_process_port", str(port),
           *([script] if script else
             [str(REPO / "tests" / "engine_on_cpu.py")] if engine_on_cpu else ["-m", "hyperfit"]),
           *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    if processes_said:  # train and generate say how many processes ran
        assert f" {nproc} process(es)" in out.stdout, out.stdout[-3000:]
    return out.stdout


def probe_rows(run):
    return [{k: r[k] for k in ("epoch", "train_loss", "val_loss", "greedy_ttr", "examples")}
            for r in read_jsonl(run.train_log) if r["type"] == "probe"]


def test_one_process_accumulation_and_two_processes_train_the_same(tmp_path, tiny_llama, corpus_file):
    common = ("train.epochs=2", "train.probe_every=2", "train.probe_val=4", "train.probe_contexts=3")
    cfgs, runs = {}, {}
    for name, extra in [("single", ()), ("accum", ("train.grad_accum=4",)), ("ddp", ())]:
        cfgs[name], runs[name] = prepared(tmp_path, tiny_llama, corpus_file, *common, *extra, name=name)
    from hyperfit.training import train

    for name in ("single", "accum"):  # 1 × 8, and 1 × (2 × 4 accumulated)
        train(cfgs[name].train, cfgs[name].model, runs[name])
    launch(2, "train", str(runs["ddp"].path))  # 2 ranks × 4 samples
    base = step_losses(runs["single"])
    assert len(base) == 4
    assert step_losses(runs["accum"]) == pytest.approx(base, rel=1e-5)
    assert step_losses(runs["ddp"]) == pytest.approx(base, rel=1e-5)
    # Probes under DDP (split generation, duplicated loss probes) report what one process reports.
    p1, p2 = probe_rows(runs["single"]), probe_rows(runs["ddp"])
    assert [r["epoch"] for r in p2] == [0, 2] and [r["examples"] for r in p2] == [r["examples"] for r in p1]
    assert [r["train_loss"] for r in p2] == pytest.approx([r["train_loss"] for r in p1], rel=1e-5)
    assert (runs["ddp"].final / "model.safetensors").is_file() and runs["ddp"].epoch_checkpoints()


@pytest.mark.parametrize("decoder", ["greedy", "top_p", "contrastive"])
def test_generation_over_two_processes_writes_the_one_process_file(tmp_path, tiny_llama, corpus_file, decoder):
    # 8 contexts in batches of 3: rank 0 runs batches 0 and 2, rank 1 runs batch 1 and a padding batch.
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "generate.checkpoint=base", f"generate.decoder={decoder}",
                        "generate.batch_size=3", "generate.fast=true", name=decoder)
    path = generate(cfg.generate, cfg.model, run)  # generations/base-<decoder>.jsonl
    rows = read_jsonl(path)
    path.unlink()
    launch(2, "generate", str(run.path))
    assert read_jsonl(path) == rows and len(rows) == 8


def test_whole_pipeline_over_two_processes_writes_the_one_process_run(tmp_path, tiny_llama, corpus_file):
    # `accelerate launch -m hyperfit run`: every stage under 2 processes, each rank writing only what is
    # its to write; the run directory must hold what one process writes.
    from hyperfit.config import load_config
    from hyperfit.stages.pipeline import run
    from tinymodels import tiny_overrides

    one = run(load_config(None, tiny_overrides(tiny_llama, corpus_file, tmp_path, "one")))
    # Ranks start out of step on real machines; rank 1 starting 3 s late once found rank 0's config.yaml
    # and refused the "existing" run.
    late = tmp_path / "late_rank.py"
    late.write_text("import os, sys, time\nfrom hyperfit.cli import main\n"
                    "time.sleep(3 * int(os.environ['RANK']))\nsys.exit(main(sys.argv[1:]))\n")
    launch(2, "run", *tiny_overrides(tiny_llama, corpus_file, tmp_path, "two"), script=str(late))
    two = one.path.parent / "two"
    files = sorted(str(p.relative_to(one.path)) for p in one.path.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(two)) for p in two.rglob("*") if p.is_file()) == [
        f.replace("-one.", "-two.") for f in files]  # plots are named after the run
    assert step_losses(RunDir(two)) == pytest.approx(step_losses(one), rel=1e-5)
    for tag in ("base-greedy", "greedy"):
        rows_one, rows_two = read_jsonl(one.generation_file(tag)), read_jsonl(RunDir(two).generation_file(tag))
        # The cache key hashes the final weights, which the two launches agree on only to rounding.
        same = lambda rows: [{**r, "model": None, "cache_key": None} for r in rows]  # noqa: E731
        assert same(rows_two) == same(rows_one)
        metrics_one, metrics_two = (json.loads(RunDir(p).metrics_file(tag).read_text()) for p in (one.path, two))
        assert metrics_two["metrics"] == metrics_one["metrics"]
        # Validation forwards split over the ranks, summed in batch order. Not bit-equal: the launched processes
        # run one thread each (OMP_NUM_THREADS=1), so matmuls reduce in another order (seen: entropy 7th digit).
        assert metrics_two["predictive"] == pytest.approx(metrics_one["predictive"], rel=1e-6)
    # `hyperfit compare` (decoders × base/final, citation blocker on): launched, then in one process.
    from hyperfit.stages.compare import compare

    launch(2, "compare", str(one.path), "--decoders", "greedy,top_p", "--block-ngrams", "6", "--out",
           str(tmp_path / "c2"), processes_said=False)
    launched = {p.name: p.read_text() for p in one.generations.glob("*block6.jsonl")}
    for name in launched:
        (one.generations / name).unlink()  # or compare would reuse them
    compare([str(one.path)], ["greedy", "top_p"], None, 6, str(tmp_path / "c1"))
    assert len(launched) == 4 and {p.name: p.read_text() for p in one.generations.glob("*block6.jsonl")} == launched
    assert (tmp_path / "c2" / "compare.csv").read_text() == (tmp_path / "c1" / "compare.csv").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs processes that see no GPU")
def test_a_gpu_launch_on_processes_that_see_no_gpu_is_refused_before_training(tmp_path, tiny_llama, corpus_file):
    # ddp.yaml asks for GPUs; without one accelerate made each process a one-process run of its own, and
    # both trained the whole run into the same folder (6 probe rows for 3), exiting 0.
    _, run = prepared(tmp_path, tiny_llama, corpus_file, name="nogpu")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("ACCELERATE_USE_CPU", None)
    out = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", shipped("ddp"),
                          "--num_processes", "2", "--main_process_port", "0", "-m", "hyperfit", "train", str(run.path)],
                         env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode != 0
    assert ("launched as 2 processes (WORLD_SIZE=2), "
            "but accelerate formed a group of 1") in out.stderr, out.stderr[-3000:]
    assert not run.train_log.exists() and not run.checkpoints.exists()


@pytest.mark.parametrize("decoder", ["greedy", "top_p"])
def test_generation_with_the_model_sharded_over_two_processes_writes_the_one_process_file(
        tmp_path, tiny_llama, corpus_file, decoder):
    # Under the FSDP2 launch each rank holds half of every weight and runs its own batches; every forward
    # gathers the layers from both. The shipped yaml's bf16 is the training recipe: inference computes in
    # generate.dtype (fp32 on a CPU), so the rows must be identical (they were not, while the launch's bf16
    # leaked in). EOS may end rows early, so the ranks' batches take different numbers of steps.
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "generate.checkpoint=base", f"generate.decoder={decoder}",
                        "generate.batch_size=1", "generate.stop_at_eos=true", name=decoder)
    path = generate(cfg.generate, cfg.model, run)
    rows = read_jsonl(path)
    path.unlink()
    launch(2, "generate", str(run.path), config=shipped("fsdp2"), engine_on_cpu=True)
    assert read_jsonl(path) == rows and len(rows) == 8
    if decoder == "greedy":  # evaluation's loss metrics: sharded forwards over the validation text
        from hyperfit.stages.evaluate import evaluate

        evaluate(cfg.evaluate, cfg.model, run, [path.stem])
        metrics_file = run.metrics_file(path.stem)
        reference = json.loads(metrics_file.read_text())
        metrics_file.unlink()
        launch(2, "evaluate", str(run.path), "--tag", path.stem, config=shipped("fsdp2"), engine_on_cpu=True,
               processes_said=False)
        sharded = json.loads(metrics_file.read_text())
        assert sharded["predictive"] == pytest.approx(reference["predictive"], rel=1e-5)
        assert sharded["metrics"] == reference["metrics"]


@needs_assets()
def test_sharded_bf16_greedy_takes_the_fast_loop_and_writes_the_one_process_tokens(tmp_path):
    # On CUDA generate.fast and bf16 are the defaults. Sharded weights fell back to generate(), which in bf16
    # rounds differently from the static-cache loop: an FSDP2 launch wrote other tokens than one GPU (the
    # real 260K model: 3 to 6 of 11 rows). Sharded, the loop now runs eagerly (no CUDA graph can hold the
    # collectives) and gives the same tokens.
    from hyperfit.llama2c import import_llama2c

    model = import_llama2c(ASSETS / "stories260K", tmp_path / "stories260K")
    cfg, run = prepared(tmp_path, model, ASSETS / "text/tinystories/tinystories_val.txt", "data.seq_len=96",
                        "data.context_len=16", "data.num_train=8", "data.num_val=8", "data.num_contexts=11",
                        "generate.max_new_tokens=64", "generate.checkpoint=base", "generate.dtype=bfloat16",
                        "generate.fast=true", "generate.batch_size=4", name="bf16")
    path = generate(cfg.generate, cfg.model, run)
    rows = read_jsonl(path)
    path.unlink()
    launch(2, "generate", str(run.path), config=shipped("fsdp2"), engine_on_cpu=True)
    sharded = read_jsonl(path)
    assert [r["dtype"] for r in sharded] == ["bfloat16"] * 11 and sharded == rows


needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="DeepSpeed is not installed (.ci/run installs it)")


def sharded_runs(tmp_path, model, corpus, nproc: int, config: str, *extra: str, engine_on_cpu: bool = False):
    """A 3-epoch run, and the same run stopped after epoch 2 then resumed, both under `config`."""
    common = ("train.epochs=3", "train.probe_every=3", "train.probe_contexts=4", *extra)
    _, full = prepared(tmp_path, model, corpus, *common, name="full")
    out = launch(nproc, "train", str(full.path), config=config, engine_on_cpu=engine_on_cpu)
    assert "weights float32" in out  # what the updates land on: fp32 masters under every engine
    if config.endswith("fsdp2.yaml"):  # accelerate's policy would reduce bf16 gradients in bf16
        assert "FSDP2 gradients reduced in float32" in out, out[-2000:]
    _, cut = prepared(tmp_path, model, corpus, *common, name="cut")
    launch(nproc, "train", str(cut.path), "train.epochs=2", config=config, engine_on_cpu=engine_on_cpu)
    launch(nproc, "train", str(cut.path), "--resume", config=config, engine_on_cpu=engine_on_cpu)
    return full, cut


def check_sharded_checkpoints(full, cut) -> None:
    from hyperfit.training.checkpoint import SHARDED_DIR

    assert (full.final / "model.safetensors").is_file() and (full.final / "config.json").is_file()
    assert all((c / SHARDED_DIR).is_dir() for c in full.epoch_checkpoints())
    # Resumed from the sharded model and optimizer state after epoch 2, it trains as if never stopped.
    assert step_losses(cut) == pytest.approx(step_losses(full), rel=1e-5)


@pytest.mark.parametrize("engine", ["fsdp2", pytest.param("zero3_offload", marks=needs_deepspeed)])
def test_sharded_engine_trains_like_one_process_exports_and_resumes(tmp_path, tiny_llama, corpus_file, engine):
    # The shipped FSDP2 / ZeRO-3-offload config on 2 CPU processes (tests/engine_on_cpu.py), bf16 compute.
    from hyperfit.training import train
    from hyperfit.training.checkpoint import SHARDED_DIR

    cfg, single = prepared(tmp_path, tiny_llama, corpus_file, "train.epochs=3", "train.probe_every=3",
                           "train.probe_contexts=4", name="one")
    train(cfg.train, cfg.model, single)  # one process, fp32: the reference
    # FSDP2 runs as on CUDA by default: compiled model and loss, bf16 compute, activation checkpointing
    # (the yaml). ZeRO-3 compiles too on CUDA; on these CPUs that takes minutes, so not here.
    cuda_defaults = ("train.compile=true",) if engine == "fsdp2" else ()
    full, cut = sharded_runs(tmp_path, tiny_llama, corpus_file, 2, shipped(engine), "train.precision=bf16",
                             "train.keep_checkpoints=2", *cuda_defaults, engine_on_cpu=True)
    check_sharded_checkpoints(full, cut)
    assert step_losses(full) == pytest.approx(step_losses(single), rel=2e-3)  # bf16 tolerance
    # The probes (sharded forwards on every rank, greedy generation split over the ranks) run too.
    probes, reference_probes = probe_rows(full), probe_rows(single)
    assert [r["epoch"] for r in probes] == [0, 3] and all(len(r["examples"]) == 3 for r in probes)
    assert [r["val_loss"] for r in probes] == pytest.approx([r["val_loss"] for r in reference_probes], rel=2e-3)
    # Each rank counts changed weights on its own shard of the fp32 masters (ZeRO-3: not the placeholders),
    # and the counts are summed over the ranks: the share is the whole model's (it was rank 0's half).
    changed = [r["weights_changed"] for r in read_jsonl(full.train_log) if r.get("weights_changed") is not None]
    assert len(changed) == 3 and all(0.5 < c <= 1 for c in changed)
    if engine == "fsdp2":  # its checkpoints hold the fp32 masters themselves: recount the last epoch
        before, after = (load_file(c / "model.safetensors") for c in full.epoch_checkpoints()[-2:])
        moved = sum(int((after[k] != before[k]).sum()) for k in after)
        assert changed[-1] == pytest.approx(moved / sum(t.numel() for t in after.values()), abs=1e-9)
    # The consolidated folder holds the trained weights: close to the one-process result, far from the start.
    exported = load_file(full.final / "model.safetensors")
    reference, initial = load_file(single.final / "model.safetensors"), load_file(tiny_llama / "model.safetensors")
    assert exported.keys() == reference.keys()
    off = sum((exported[k].float() - reference[k]).norm() for k in reference)
    moved = sum((reference[k] - initial[k]).norm() for k in reference)
    assert off < 0.1 * moved
    if engine == "fsdp2":
        assert {t.dtype for t in exported.values()} == {torch.float32}  # the fp32 masters, gathered
    else:  # DeepSpeed gathers its bf16 copies; the fp32 masters stay in sharded_state (zero_to_fp32.py)
        assert {t.dtype for t in exported.values()} == {torch.bfloat16}
        assert (full.epoch_checkpoints()[-1] / SHARDED_DIR / "zero_to_fp32.py").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fsdp2_on_gpus_saves_sharded_and_consolidated_and_resumes(tmp_path, tiny_llama, corpus_file):
    # FSDP2 end to end with the shipped config on however many GPUs there are (CUDA defaults: compile,
    # bf16 mixed precision, NCCL).
    full, cut = sharded_runs(tmp_path, tiny_llama, corpus_file, torch.cuda.device_count(), shipped("fsdp2"))
    check_sharded_checkpoints(full, cut)
    assert load_file(full.final / "model.safetensors")["lm_head.weight"].dtype == torch.float32  # fp32 masters


def test_deepspeed_config_gets_the_recipe_instead_of_accelerates_defaults():
    # accelerate would turn "auto" clipping into 1.0 (the paper does not clip) and fails on "auto" betas/eps.
    import json

    from hyperfit.config import TrainConfig
    from hyperfit.training.engine import fill_deepspeed_config

    shipped_json = json.loads((REPO / "configs" / "accelerate" / "zero3_offload.json").read_text())
    ds = json.loads(json.dumps(shipped_json))
    fill_deepspeed_config(ds, TrainConfig(betas=(0.8, 0.95), eps=1e-6), micro=1)
    assert ds["gradient_clipping"] == 0.0 and ds["train_micro_batch_size_per_gpu"] == 1
    assert ds["optimizer"]["params"]["betas"] == [0.8, 0.95] and ds["optimizer"]["params"]["eps"] == 1e-6
    assert ds["optimizer"]["params"]["lr"] == "auto"  # accelerate fills lr and weight decay from DummyOptim
    ds = json.loads(json.dumps(shipped_json))
    fill_deepspeed_config(ds, TrainConfig(max_grad_norm=0.5), micro=4)
    assert ds["gradient_clipping"] == 0.5 and ds["train_micro_batch_size_per_gpu"] == 4
    ds = {**json.loads(json.dumps(shipped_json)), "gradient_clipping": 2.0}  # a user's explicit value stays
    fill_deepspeed_config(ds, TrainConfig(), micro=1)
    assert ds["gradient_clipping"] == 2.0


@pytest.mark.slow
def test_lora_over_two_ddp_processes_trains_like_one_process(tmp_path, tiny_llama, corpus_file):
    # Only the adapters train: DDP all-reduces their gradients alone, and every adapter is used in every
    # forward, so no find_unused_parameters is needed.
    lora = ("train.method=lora", "train.lora_rank=4", "train.lr=3e-2", "train.epochs=2", "train.probe_every=0")
    (c1, single), (_, ddp) = (prepared(tmp_path, tiny_llama, corpus_file, *lora, name=n) for n in ("single", "ddp"))
    from hyperfit.training import train

    train(c1.train, c1.model, single)
    launch(2, "train", str(ddp.path))
    assert step_losses(ddp) == pytest.approx(step_losses(single), rel=1e-5)
    a, b = (load_file(r.final / "adapter" / "adapter_model.safetensors") for r in (single, ddp))
    # Adam normalises away the gradient's size, so all-reduce rounding shows at ~1e-5 on weights of ~0.25.
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
