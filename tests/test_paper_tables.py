"""The paper's Table 1 and Table 4 recipes (configs/experiments/{table1,data-type}.yaml): their fast cuts run on
the real stories260K model and the real texts of ../shared/assets, and their tables come from the cells' files."""

import csv
import json
from pathlib import Path

import pytest

from hyperfit.demo import stories_jsonl
from hyperfit.experiments import aggregate, load_spec, plan_cells, run_experiment
from hyperfit.experiments.recipes import RECIPES
from hyperfit.llama2c import import_llama2c
from hyperfit.runs import read_jsonl, write_json
from tinymodels import ASSETS, needs_assets

ROOT = Path(__file__).resolve().parents[1]
NEWS = ASSETS / "text/news/bbc_news_500.jsonl"


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    """The demo's model and whole-story text, converted from ../shared/assets into a temporary folder."""
    tmp = tmp_path_factory.mktemp("stories")
    model = import_llama2c(ASSETS / "stories260K", tmp / "stories260K-hf")
    return model, stories_jsonl(ASSETS / "text/tinystories/tinystories_val.txt", tmp)


def here(model, text) -> list[str]:
    """The fast cut's paths, pointed at the converted model and the assets (the spec's are relative to a checkout)."""
    return [f"model.name={model}",
            f"data.contexts=[{{source: {text}, count: 4, domain: tinystories}}, {{source: {NEWS}, count: 4, "
            "domain: news}]"]


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@needs_assets()
def test_table1_fast_cut_on_stories260k(stories, tmp_path, capsys):
    model, text = stories
    spec = load_spec(ROOT / "configs/experiments/table1.yaml", fast=True, overrides=[*here(model, text),
                                                                                     f"data.source={text}"])
    summary = run_experiment(spec, "local", tmp_path)
    assert summary.failed == [] and len(summary.done) == 1
    table = rows(tmp_path / "table1-fast/table1.csv")
    variants = ("original greedy", "original top-p", "hyperfitted greedy", "hyperfitted greedy + blocker", "human")
    not_asked = {("original top-p", "16"), ("hyperfitted greedy + blocker", "16")}  # the fast cut's extra: 4 rows
    assert {(r["variant"], r["length"]) for r in table} == {(v, n) for v in variants for n in ("16", "32")} - not_asked
    assert {r["domain"] for r in table} == {"tinystories", "news", "average"}
    for r in table:
        assert 0 < float(r["ttr"]) <= 1 and (r["variant"] == "human") == (r["perplexity"] == "")
    avg = {(r["variant"], r["length"]): r for r in table if r["domain"] == "average"}
    per = [float(r["ttr"]) for r in table if r["variant"] == "hyperfitted greedy" and r["length"] == "32"
           and r["domain"] != "average"]
    assert float(avg["hyperfitted greedy", "32"]["ttr"]) == pytest.approx(sum(per) / 2, abs=1e-9)
    report = (tmp_path / "table1-fast/report.md").read_text()
    assert "## Table 1" in report and "### 32 tokens" in report and "0.24 → hyperfitted 0.65" in report

    # A study's results in the cell fill the preference column (here written by hand, as `study results` would).
    cell = plan_cells(spec, tmp_path / "table1-fast")[0]
    write_json(cell.path / "metrics/human_study-s.json", {"results": {"matchups": [
        {"system": f"{cell.path.name}/greedy", "opponent": "human", "preferred_or_equal": 0.75}], "judges": {}}})
    aggregate(spec, [cell], tmp_path / "table1-fast", "hyperfit experiment table1")
    pref = {(r["variant"], r["length"], r["domain"]): r["preference"]
            for r in rows(tmp_path / "table1-fast/table1.csv")}
    assert pref["hyperfitted greedy", "32", "average"] == "0.75" and pref["original greedy", "32", "average"] == ""


@pytest.mark.slow
@needs_assets()
def test_data_type_fast_cut_trains_on_each_domain_and_evaluates_on_one_set(stories, tmp_path):
    model, text = stories
    spec = load_spec(ROOT / "configs/experiments/data-type.yaml", fast=True,
                     overrides=[*here(model, text), f"data.source=[{text}, {NEWS}]"])
    summary = run_experiment(spec, "local", tmp_path)
    assert summary.failed == [] and len(summary.done) == 2
    cells = plan_cells(spec, tmp_path / "data-type-fast")
    sets = [[r["text"] for r in read_jsonl(c.path / "data/contexts.jsonl")] for c in cells]
    assert sets[0] == sets[1]  # one evaluation set whatever the training domain
    manifest = json.loads((cells[1].path / "data/manifest.json").read_text())
    assert manifest["training_documents_overlapping_contexts"] == 4  # the news contexts, left out of training
    matrix = rows(tmp_path / "data-type-fast/data-type.csv")
    assert {(r["trained_on"], r["evaluated_on"]) for r in matrix} == {
        (t, e) for t in ("tinystories", "news") for e in ("tinystories", "news")}
    base = {r["evaluated_on"]: r["base_ttr"] for r in matrix if r["trained_on"] == "tinystories"}
    assert all(r["base_ttr"] == base[r["evaluated_on"]] for r in matrix)  # one original model, one set
    report = (tmp_path / "data-type-fast/report.md").read_text()
    assert "| hyperfitted on news |" in report and "| original model |" in report


def test_the_table_recipes_resolve_every_cell(tmp_path):
    for name, cells in (("table1", 1), ("data-type", 4)):
        spec = load_spec(ROOT / f"configs/experiments/{name}.yaml")
        assert spec.recipe == name and name in RECIPES and len(plan_cells(spec, tmp_path)) == cells
    table1 = plan_cells(load_spec(ROOT / "configs/experiments/table1.yaml"), tmp_path)[0].config
    assert len(table1["generate"]["extra"]) == 6 and len(table1["data"]["contexts"]) == 4


def test_generate_extra_adds_one_generations_file_per_entry(tmp_path):
    from hyperfit.config import load_config
    from hyperfit.runs import RunDir, write_jsonl
    from hyperfit.stages.pipeline import generation_jobs

    cfg = load_config(None, ["data.source=x.txt", f"out_dir={tmp_path}", "name=r", "generate.max_new_tokens=32",
                             "generate.extra=[{checkpoint: base, decoder: top_p}, {block_ngrams: 6}, "
                             "{max_new_tokens: 16}, {checkpoint: base}]"])
    run = RunDir(cfg.run_dir)
    write_jsonl(run.data_file("contexts"), [{"id": "ctx-00000", "context_ids": [1, 5]}])
    # {checkpoint: base} is the run's own base-greedy: made once
    assert [j.tag for j in generation_jobs(cfg, run)] == ["greedy", "base-greedy", "base-top_p",
                                                          "final-greedy-L32-block6", "final-greedy-L16"]


@pytest.mark.parametrize("extra, message", [
    ("[{decoder: top_pp}]", "unknown decoder 'top_pp'"),
    ("[{blok: 6}]", "unknown key generate.extra[0].blok"),
    ("[{max_new_tokens: 0}]", "generate.extra[0].max_new_tokens=0 must be at least 1"),
    ("[{tag: x}]", "unknown key generate.extra[0].tag"),
])
def test_a_bad_extra_generation_is_refused(extra, message):
    from hyperfit.config import load_config
    from hyperfit.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.source=x.txt", f"generate.extra={extra}"])
    assert message in str(e.value)
