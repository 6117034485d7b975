"""`hyperfit figure`: Fig. 1 (repetition), Fig. 4 (probabilities), Fig. 9 (TTR by position, several runs) and
training curves of several runs, from real run directories of the tiny model."""

import json

import pytest

from hyperfit.cli import main
from hyperfit.config import load_config
from hyperfit.errors import ConfigError
from hyperfit.figures import draw
from hyperfit.figures.repetition import repeats
from hyperfit.stages.pipeline import run
from tinymodels import tiny_overrides


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_llama, corpus_file):
    out = tmp_path_factory.mktemp("figures")
    return [run(load_config(None, [*tiny_overrides(tiny_llama, corpus_file, out, name), f"data.seed={seed}"])).path
            for name, seed in (("a", 0), ("b", 1))]


def test_repetition_colours_the_repeated_ngrams_in_html_and_png(two_runs, tmp_path):
    html, png = draw("repetition", two_runs[:1], tmp_path, n=2)
    page = html.read_text()
    assert "original model, greedy" in page and "hyperfitted model, greedy" in page
    assert page.count("<span style=\"background:") >= 1 or "0% of tokens" in page
    assert png.stat().st_size > 2000
    assert repeats([5, 6, 5, 6], 2) == [0, 0, 2, 2] and repeats([1, 2, 3], 2) == [0, 0, 0]


def test_probabilities_before_and_after_of_a_chosen_text(two_runs, tmp_path):
    data, png = draw("probabilities", two_runs, tmp_path, text="the cat saw the dog and the bird")
    doc = json.loads(data.read_text())
    assert set(doc) == {"tokens", "original", "hyperfitted (a)", "hyperfitted (b)"}
    n = len(doc["tokens"])
    for series in ("original", "hyperfitted (a)"):
        actual, top1 = doc[series]["actual"], doc[series]["top1"]
        assert len(actual) == len(top1) == n and all(0 <= a <= t + 1e-6 <= 1 + 1e-6 for a, t in zip(actual, top1))
    assert png.stat().st_size > 2000


def test_ttr_and_curves_put_several_runs_on_one_plot_from_the_command_line(two_runs, tmp_path, capsys):
    assert main(["figure", "ttr", *map(str, two_runs), "--out", str(tmp_path), "--window", "8"]) == 0
    assert main(["figure", "curves", *map(str, two_runs), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "ttr_by_position.png").stat().st_size > 2000
    assert (tmp_path / "training_curves_runs.png").stat().st_size > 2000
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="not a run directory"):
        draw("ttr", [tmp_path])
    with pytest.raises(ConfigError, match="Did you mean"):
        draw("repetitions", two_runs)
