"""Crash consistency: `hyperfit run` killed with SIGKILL at named write points (runs.fault_point), then
`hyperfit run --resume`, ends with the same files as a run that was never killed: the same final weights,
generations and metric values, and no temp file left behind."""

import json
import os
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from hyperfit.runs import LEFTOVER_SUFFIXES
from tinymodels import tiny_overrides

# (file or folder name, which write of it, before or after its rename; "between": final/ moved aside, the
# new one not yet in place). One point per stage: data, training log, checkpoint, final weights, generations,
# metrics, report.
ALL_POINTS = ["contexts.jsonl", "train_log.jsonl:3", "epoch-0002", "final", "final:1:after", "greedy.jsonl",
              "base-greedy.json", "report.md"]
# CI runs one point per phase (each costs two subprocess runs); HYPERFIT_CRASH_POINTS=all runs every one.
POINTS = ALL_POINTS if os.environ.get("HYPERFIT_CRASH_POINTS") == "all" else \
    ["train_log.jsonl:3", "epoch-0002", "final:1:after", "base-greedy.json"]


def hyperfit_run(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("HYPERFIT_FAULT_AT", None)
    if fault:
        env["HYPERFIT_FAULT_AT"] = fault
    return subprocess.run([sys.executable, "-m", "hyperfit", "run", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def outcome(run) -> dict:
    """What a finished run holds, minus what records time and place (provenance, hashes of paths)."""
    weights = load_file(run / "checkpoints/final/model.safetensors")
    gens = {p.name: [r["continuation_ids"] for r in map(json.loads, p.read_text().splitlines())]
            for p in sorted((run / "generations").glob("*.jsonl"))}
    metrics = {p.name: json.loads(p.read_text())["metrics"] for p in sorted((run / "metrics").glob("*.json"))}
    return {"weights": {k: v.tolist() for k, v in weights.items()}, "generations": gens, "metrics": metrics,
            "train_log": [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                          for line in (run / "train_log.jsonl").read_text().splitlines()]}


def leftovers(run) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*") if p.name.endswith(LEFTOVER_SUFFIXES))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama, corpus_file):
    out = tmp_path_factory.mktemp("ref")
    done = hyperfit_run([*tiny_overrides(tiny_llama, corpus_file, out, "r"), "train.save_every=1"])
    assert done.returncode == 0, done.stderr[-3000:]
    return outcome(out / "r")


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_at_a_write_resumes_to_the_same_files(point, reference, tmp_path, tiny_llama, corpus_file):
    args = [*tiny_overrides(tiny_llama, corpus_file, tmp_path, "r"), "train.save_every=1"]
    killed = hyperfit_run(args, fault=point)
    assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
    resumed = hyperfit_run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert leftovers(tmp_path / "r") == []
    assert outcome(tmp_path / "r") == reference
