"""Golden tests: the statistics on small tables worked out by hand."""

from __future__ import annotations

import math

import pytest

from hyperfit.study import analysis

M, REF = "run/greedy", "run/original"


def row(annotator, item, winner, choice="left", a=M, b=REF, kind="pair", annotator_kind="human", ms=1000):
    return {"annotator": annotator, "annotator_kind": annotator_kind, "item": item, "kind": kind,
            "system_a": a, "system_b": b, "winner": winner, "choice": choice, "ms_on_task": ms}


def test_preferred_or_equal_of_four_judgements_is_three_quarters():
    rates = analysis.outcome_rates(["a", "equal", "b", "a"])
    assert rates["preferred_or_equal"] == 0.75
    assert (rates["win"], rates["tie"], rates["loss"]) == (2, 1, 1)
    assert (rates["win_rate"], rates["tie_rate"], rates["loss_rate"]) == (0.5, 0.25, 0.25)


def test_matchup_counts_per_system_pair_with_a_ci_around_the_estimate():
    rows = [row("x", 1, "a"), row("y", 1, "equal"), row("x", 2, "b"), row("y", 2, "a"),
            row("x", 3, "b"), row("y", 3, "b"), row("x", 4, "a"), row("y", 4, "a")]
    (m,) = analysis.matchups(rows, seed=0)
    assert (m["system"], m["opponent"], m["items"], m["judgements"]) == (M, REF, 4, 8)
    assert m["preferred_or_equal"] == 5 / 8
    # Item-level shares are 1, .5, 0, 1: any bootstrap resample stays within [0, 1] and brackets 5/8.
    assert 0 <= m["ci_low"] < 5 / 8 < m["ci_high"] <= 1
    assert analysis.matchups(rows, seed=0) == [m]  # seeded: identical on a rerun


def test_bootstrap_ci_edge_cases():
    assert analysis.bootstrap_ci([2, 2, 2], [2, 2, 2]) == (1.0, 1.0)  # no spread, no resampling needed
    assert all(math.isnan(x) for x in analysis.bootstrap_ci([1], [2]))  # one item: undefined
    low, high = analysis.bootstrap_ci([0, 3] * 50, [3, 3] * 50, seed=1)
    assert 0.39 < low < 0.5 < high < 0.61  # 100 items at 0 or 1: ~ 0.5 +- 1.96 * 0.05


def test_position_bias_counts_and_binomial_p():
    choices = ["left"] * 7 + ["right"] * 3 + ["equal"] * 2
    rows = [row("x", i, "a", choice=c) for i, c in enumerate(choices)] + [row("x", 99, "a", kind="check")]
    bias = analysis.position_bias(rows)
    assert (bias["left"], bias["right"], bias["equal"]) == (7, 3, 2)  # the check is not counted
    assert bias["left_share"] == 0.7
    # Two-sided exact binomial, 7 of 10: 2 * (C(10,7)+C(10,8)+C(10,9)+C(10,10)) / 2^10 = 352/1024.
    assert bias["p_value"] == pytest.approx(352 / 1024)


def test_krippendorff_alpha_matches_the_hand_computation():
    # Rater x: a a b equal; rater y: a b b equal. Coincidences: o_aa=2, o_ab=o_ba=1, o_bb=2, o_ee=2;
    # n=8, n_a=3, n_b=3, n_e=2. alpha = 1 - (n-1) * 2 / (n^2 - 9 - 9 - 4) = 1 - 14/42 = 2/3.
    rows = [row("x", 1, "a"), row("x", 2, "a"), row("x", 3, "b"), row("x", 4, "equal"),
            row("y", 1, "a"), row("y", 2, "b"), row("y", 3, "b"), row("y", 4, "equal"),
            row("z", 5, "b")]  # an item rated once adds nothing
    agreement = analysis.krippendorff_alpha(rows)
    assert agreement["krippendorff_alpha"] == pytest.approx(2 / 3)
    assert agreement["items_rated_twice_or_more"] == 4 and agreement["raters"] == 3


def test_krippendorff_alpha_undefined_without_overlap():
    assert math.isnan(analysis.krippendorff_alpha([row("x", 1, "a"), row("y", 2, "b")])["krippendorff_alpha"])


def test_bradley_terry_orders_a_clear_case_and_is_skipped_for_two_systems():
    rows = []
    for i in range(6):
        rows += [row("x", i, "a", a="A", b="B"), row("x", 10 + i, "a", a="B", b="C"),
                 row("x", 20 + i, "b", a="C", b="A")]
    rows += [row("y", 30, "equal", a="A", b="B")]
    ranking = analysis.bradley_terry(rows)
    assert [r["system"] for r in ranking] == ["A", "B", "C"]
    assert ranking[0]["score"] > ranking[1]["score"] > ranking[2]["score"]
    assert analysis.bradley_terry([row("x", 1, "a")]) is None


def test_attention_checks_per_annotator_equal_counts_as_failed():
    rows = [row("x", 1, "a", kind="check"), row("x", 2, "b", kind="check"),
            row("y", 3, "equal", kind="check"), row("z", 4, "a", kind="check"), row("z", 5, "b")]
    assert analysis.attention_checks(rows) == {"x": {"checks": 2, "failed": 1},
                                               "y": {"checks": 1, "failed": 1},
                                               "z": {"checks": 1, "failed": 0}}


def test_summary_separates_judges_and_can_drop_failed_annotators():
    rows = [row("x", 1, "a"), row("y", 1, "b"), row("y", 9, "b", kind="check"),
            row("judge:m", 1, "b", annotator_kind="judge"), row("judge:m", 2, "b", annotator_kind="judge")]
    s = analysis.summarise(rows)
    assert s["judgements"] == 3 and s["matchups"][0]["preferred_or_equal"] == 0.5
    assert s["failed_attention_checks"] == ["y"]
    assert s["judges"]["judge:m"]["matchups"][0]["preferred_or_equal"] == 0.0
    dropped = analysis.summarise(rows, drop_failed=True)
    assert dropped["matchups"][0]["preferred_or_equal"] == 1.0 and dropped["dropped_annotators"] == ["y"]
    assert s["median_seconds_per_judgement"] == 1.0
