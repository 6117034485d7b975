"""Settings that must agree do agree: 1 process × 8 = 1 process × (2 × 4 accumulated) = 2 processes × 4
(gloo on CPU, launched with `accelerate launch` like a user would), and generation split over 2
processes writes the same file as one process."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperfit.generate import generate
from hyperfit.runs import read_jsonl
from test_train import prepared, step_losses

SRC = str(Path(__file__).resolve().parents[1] / "src")


def launch(nproc: int, *args: str, config: str | None = None) -> None:
    """`accelerate launch --cpu --num_processes N -m hyperfit ARGS` in a subprocess (gloo backend); with
    `config`, `accelerate launch --config_file CONFIG --num_processes N` on the GPUs instead."""
    with socket.socket() as s:  # a free port, so parallel test runs do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    where = ["--config_file", config] if config else ["--cpu", "--num_machines", "1", "--mixed_precision", "no",
                                                      "--dynamo_backend", "no"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *where, "--num_processes", str(nproc),
           "--main_process_port", str(port), "-m", "hyperfit", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def probe_rows(run):
    return [{k: r[k] for k in ("epoch", "train_loss", "val_loss", "greedy_ttr", "examples")}
            for r in read_jsonl(run.train_log) if r["type"] == "probe"]


def test_one_process_accumulation_and_two_processes_train_the_same(tmp_path, tiny_llama, corpus_file):
    common = ("train.epochs=2", "train.probe_every=2", "train.probe_val=4", "train.probe_contexts=3")
    cfgs, runs = {}, {}
    for name, extra in [("single", ()), ("accum", ("train.grad_accum=4",)), ("ddp", ())]:
        cfgs[name], runs[name] = prepared(tmp_path, tiny_llama, corpus_file, *common, *extra, name=name)
    from hyperfit.train import train

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


@pytest.mark.parametrize("decoder", ["greedy", "top_p"])
def test_generation_over_two_processes_writes_the_one_process_file(tmp_path, tiny_llama, corpus_file, decoder):
    # 8 contexts in batches of 3: rank 0 runs batches 0 and 2, rank 1 runs batch 1 and a padding batch.
    cfg, run = prepared(tmp_path, tiny_llama, corpus_file, "generate.checkpoint=base", f"generate.decoder={decoder}",
                        "generate.batch_size=3", "generate.fast=true", name=decoder)
    path = generate(cfg.generate, cfg.model, run)  # generations/base-<decoder>.jsonl
    rows = read_jsonl(path)
    path.unlink()
    launch(2, "generate", str(run.path))
    assert read_jsonl(path) == rows and len(rows) == 8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (accelerate runs FSDP on GPUs only)")
def test_fsdp2_run_saves_sharded_and_consolidated_and_resumes(tmp_path, tiny_llama, corpus_file):
    # FSDP2 end to end with the shipped config on however many GPUs there are: wrapping, sharded save_state
    # per epoch, the gathered HF folder, load_state on --resume.
    from safetensors.torch import load_file

    from hyperfit.train import SHARDED_DIR

    config = str(Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "fsdp2.yaml")
    nproc = torch.cuda.device_count()
    common = ("train.epochs=3", "train.probe_every=0")
    cfg, full = prepared(tmp_path, tiny_llama, corpus_file, *common, name="full")
    launch(nproc, "train", str(full.path), config=config)
    assert (full.final / "model.safetensors").is_file() and (full.final / "config.json").is_file()
    assert all((c / SHARDED_DIR).is_dir() for c in full.epoch_checkpoints())
    assert load_file(full.final / "model.safetensors")["lm_head.weight"].dtype == torch.float32  # fp32 masters
    # The same run stopped after epoch 2, then resumed from its sharded state, trains the same.
    cfg2, cut = prepared(tmp_path, tiny_llama, corpus_file, *common, name="cut")
    launch(nproc, "train", str(cut.path), "train.epochs=2", config=config)
    launch(nproc, "train", str(cut.path), "--resume", config=config)
    assert step_losses(cut) == pytest.approx(step_losses(full), rel=1e-4)
