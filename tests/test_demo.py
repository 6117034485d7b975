"""hyperfit demo after a crash: the folder it was writing is still its own, so a rerun replaces it and
--resume finishes it (a killed demo could be neither rerun nor resumed)."""

import json

import pytest

from hyperfit.demo import DEMO_MARKER, demo
from hyperfit.runs import read_jsonl
from tinymodels import ASSETS, needs_assets

FAST = ["train.epochs=1", "data.num_train=16", "data.num_val=8", "data.num_contexts=4", "train.probe_every=0",
        "generate.max_new_tokens=16"]


@needs_assets()
def test_a_demo_killed_mid_run_can_be_rerun_and_resumed(tmp_path, monkeypatch):
    import hyperfit.stages.pipeline as pipeline_module

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what Ctrl-C raises; a SIGKILL stops at the same point without cleanup

    monkeypatch.setattr(pipeline_module, "report", killed)
    with pytest.raises(KeyboardInterrupt):
        demo(str(ASSETS), str(tmp_path), FAST)
    run = tmp_path / "demo"
    assert (run / DEMO_MARKER).is_file() and (run / "checkpoints/final").is_dir()
    monkeypatch.undo()

    trained = (run / "train_log.jsonl").read_text()
    demo(str(ASSETS), str(tmp_path), FAST, resume=True)  # finishes: generate, evaluate, report
    assert (run / "report.md").is_file() and (run / "train_log.jsonl").read_text() == trained

    demo(str(ASSETS), str(tmp_path), [*FAST, "train.epochs=0"])  # a rerun replaces it
    log = run / "train_log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    assert "epochs: 0" in (run / "config.yaml").read_text()
    assert [r["type"] for r in rows] in ([], ["trained"])  # the old run's losses are gone; no update was made
    assert read_jsonl(run / "generations/greedy.jsonl")
