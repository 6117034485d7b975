"""Study design: truncation rule, item building, assignment, order, checks, blinding placement."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperfit.study import StudyError, assign, store
from hyperfit.study.sources import (
    last_sentence,
    load_systems,
    shared_context_ids,
    split_context,
    truncate_pair,
    units,
    whole_units,
)
from study_fixtures import make_run


def test_truncate_pair_cuts_both_sides_to_the_same_whole_words():
    assert truncate_pair("x y z ", "p  q\nr s ", 10) == ("x y z", "p q r")
    assert truncate_pair("one two three four", "a b c d e f", 2) == ("one two", "a b")
    a, b = truncate_pair("  lots   of\t\tspace here ", "tidy text here too ", 100)
    assert a == "lots of space here" and len(a.split()) == len(b.split())


def test_a_word_the_token_limit_may_have_cut_is_never_shown():
    # The demo's hyperfitted side ended "…the v" / "…Sherge" at 256 tokens (29 of 64 pairs, 11 non-words).
    model, human = "Tom ran to the park and saw the v", "Tom went to the shop and bought some milk and bread for mum. "
    assert truncate_pair(model, human) == ("Tom ran to the park and saw the", "Tom went to the shop and bought some")
    assert whole_units("the v") == [" the"[1:]] and whole_units("the end.") == ["the", " end."]
    assert whole_units("猫は") == ["猫", "は"] and whole_units("ok \ufffd") == ["ok"]  # a broken character goes
    assert truncate_pair("x y z", "a b c", None) == ("x y", "a b")  # no cap: full length, minus the open word


def test_truncate_pair_ends_both_sides_mid_sentence_so_the_ending_gives_no_side_away():
    # A human story shorter than the model's text: cut to its length, it ended at its final full stop
    # while the model's side stopped mid-sentence (60 of 64 pairs in the demo gave the human side away).
    story = "Tom had a red ball. He played with it all day. Then he went home."
    model = "Tom had a big dog. The dog liked to run in the park with Tom every single day and night."
    a, b = truncate_pair(model, story, 200)
    assert (a, b) == ("Tom had a big dog. The dog liked to run in the park with",
                      "Tom had a red ball. He played with it all day. Then he went")
    assert truncate_pair("Hi! Ok? “Yes.”", "a b c ", 10) == ("Hi! Ok? “Yes.”", "a b c")  # nowhere else to cut


def test_last_sentence_and_degenerate_loop():
    context = "It was late. The old dog slept by the fire. Yes."
    assert last_sentence(context) == "The old dog slept by the fire."
    loop = assign.degenerate_loop(context, 10)
    assert loop == "The old dog slept by the fire. The old dog"


def test_distribute_gives_each_item_k_distinct_annotators_with_even_load():
    people = [f"p{i}" for i in range(7)]
    queues = assign.distribute([[i] for i in range(30)], people, 3, random.Random(0))
    raters = Counter(item for q in queues.values() for item in q)
    assert set(raters) == set(range(30)) and set(raters.values()) == {3}
    assert all(len(q) == len(set(q)) for q in queues.values())  # distinct: nobody sees an item twice
    loads = [len(q) for q in queues.values()]
    assert max(loads) - min(loads) <= 1 and sum(loads) == 90


@settings(max_examples=60, deadline=None)
@given(n_groups=st.integers(1, 30), m=st.integers(1, 3), n_people=st.integers(1, 12), data=st.data())
def test_distribute_property(n_groups, m, n_people, data):
    # Groups are contexts with m items each (m systems against the human text): nobody gets two of a group.
    if m > n_people:
        return
    k = data.draw(st.integers(1, n_people // m))
    groups = [[g * m + j for j in range(m)] for g in range(n_groups)]
    queues = assign.distribute(groups, [f"p{i}" for i in range(n_people)], k, random.Random(n_groups))
    assert Counter(i for q in queues.values() for i in q) == {i: k for i in range(n_groups * m)}
    for q in queues.values():
        assert len({i // m for i in q}) == len(q)  # each context at most once per annotator
    loads = [len(q) for q in queues.values()]
    assert max(loads) - min(loads) <= 1


@settings(max_examples=100, deadline=None)
@given(a=st.text(), b=st.text(), n=st.integers(1, 30))
def test_truncate_pair_property(a, b, n):
    ta, tb = truncate_pair(a, b, n)
    bare = lambda t: [u.strip() for u in units(t)]  # noqa: E731
    k, most = len(bare(ta)), min(n, len(whole_units(a)), len(whole_units(b)))
    assert len(bare(tb)) == k <= most
    assert bare(ta) == bare(a)[:k] and bare(tb) == bare(b)[:k] and "  " not in ta and ta == ta.strip()
    # Shorter than it could be only to end where neither side ends a sentence.
    assert k == most or (k > 0 and not any(_ends(w) for w in (bare(ta)[-1], bare(tb)[-1])))


def _ends(word: str) -> bool:
    import re

    return re.search(r"[.!?…。！？][\"'”’」』)\]）]*$", word) is not None


def test_truncate_pair_counts_characters_in_scripts_without_spaces():
    # A Japanese story was one "word": 200 characters stood against 8, and the length gave the side away.
    long, short = "猫はミルクが好きでした。毎日飲みました。" * 10, "猫は幸せでした。"
    assert truncate_pair(long, short, 100) == ("猫はミルクが好", "猫は幸せでした")
    assert truncate_pair("日本 ok fine ", "one two three four", 3) == ("日本 ok", "one two three")


def test_distribute_rejects_a_design_where_someone_would_see_a_context_twice():
    with pytest.raises(StudyError, match="need 1 x 4 = 4 different annotators.*allows is --raters-per-item 3"):
        assign.distribute([[i] for i in range(10)], ["a", "b", "c"], 4, random.Random(0))
    # 2 systems vs the human text, 4 annotators: k = 3 would show someone a context twice; 2 is the most.
    with pytest.raises(StudyError, match="2 x 3 = 6 different annotators.*allows is --raters-per-item 2"):
        assign.distribute([[2 * i, 2 * i + 1] for i in range(10)], ["a", "b", "c", "d"], 3, random.Random(0))


def test_a_context_cut_inside_a_word_hands_the_word_to_the_continuations():
    # 33 of the demo's 64 contexts ended mid-word: "…the ri" in the box, "ver was" on each side.
    assert split_context("Once upon a time the ri", ["ver was wide", "ver ran"]) == (
        "Once upon a time the", ["river was wide", "river ran"])
    assert split_context("It was big.", ["Then", " he"]) == ("It was big.", ["Then", " he"])  # whole
    assert split_context("It was big", [" Then", " he"]) == ("It was big", [" Then", " he"])  # next starts anew


def test_queues_are_shuffled_per_annotator_and_reproducible(gen_file):
    systems, opponent = load_systems([gen_file], "original")
    pairs = assign.build_pairs(systems, opponent, shared_context_ids([*systems, opponent], False), "vs", 20)
    people = ["a", "b", "c", "d"]
    plan = assign.plan_study(pairs, people, 4, 0.0, seed=3)  # everyone judges all 12 items
    queues = [plan.queues[p] for p in people]
    assert all(sorted(q) == list(range(12)) for q in queues)  # each a permutation of the same items
    assert len({tuple(q) for q in queues}) == 4  # in a different order for each annotator
    assert assign.plan_study(pairs, people, 4, 0.0, seed=3).queues == plan.queues
    assert assign.plan_study(pairs, people, 4, 0.0, seed=4).queues != plan.queues


def test_attention_checks_are_added_at_the_rate_and_have_a_real_good_side(gen_file):
    systems, opponent = load_systems([gen_file], "original")
    pairs = assign.build_pairs(systems, opponent, shared_context_ids([*systems, opponent], False), "vs", 20)
    plan = assign.plan_study(pairs, ["a", "b", "c", "d"], 2, 0.4, seed=0)  # 6 real each -> round(2.4) = 2 checks
    for queue in plan.queues.values():
        kinds = Counter(plan.items[i].kind for i in queue)
        assert kinds == {"pair": 6, "check": 2}
    check = next(it for it in plan.items if it.kind == "check")
    assert check.system_b is None and check.system_a.endswith("/original")
    assert len(check.text_a.split()) == len(check.text_b.split())
    assert check.text_b.startswith("The ") and "very old and tired." in check.text_b
    assert assign.n_checks(9, 0.05) == 1 and assign.n_checks(40, 0.05) == 2 and assign.n_checks(40, 0) == 0


@pytest.mark.parametrize("seed", range(5))
def test_attention_checks_never_show_the_good_side_of_a_pair_the_annotator_judges(gen_file, seed):
    # A check's good side is shown as the right answer; from a context in the annotator's own queue it
    # marked that pair's original before the pair came up (about half the checks, in a hunt).
    systems, opponent = load_systems([gen_file], "original")
    pairs = assign.build_pairs(systems, opponent, shared_context_ids([*systems, opponent], False), "vs", 20)
    plan = assign.plan_study(pairs, ["a", "b", "c", "d", "e", "f"], 3, 0.5, seed=seed)
    for queue in plan.queues.values():
        judged = {plan.items[i].context_id for i in queue if plan.items[i].kind == "pair"}
        checks = [plan.items[i] for i in queue if plan.items[i].kind == "check"]
        assert len(checks) == 3 and not {c.context_id for c in checks} & judged
    # Everyone judges every context: the good side is either system's, so it says nothing about the source.
    everyone = assign.plan_study(pairs, ["a", "b"], 2, 0.5, seed=seed)
    good = {everyone.items[i].system_a.rsplit("/", 1)[-1] for q in everyone.queues.values() for i in q
            if everyone.items[i].kind == "check"}
    assert good <= {"original", "greedy"}


def test_placement_is_an_hmac_stable_and_roughly_balanced():
    secret = b"k" * 32
    sides = [assign.a_on_left(secret, "ann", i) for i in range(400)]
    assert sides == [assign.a_on_left(secret, "ann", i) for i in range(400)]
    assert 150 < sum(sides) < 250
    assert sides != [assign.a_on_left(b"j" * 32, "ann", i) for i in range(400)]


def test_round_robin_design_pairs_every_system(tmp_path):
    a = make_run(tmp_path, tag="greedy", tag_seed=1)
    b = make_run(tmp_path, tag="topk", tag_seed=2, decoder="top_k")
    systems, opponent = load_systems([a, b], "original")
    ids = shared_context_ids([*systems, opponent], False)
    vs = assign.build_pairs(systems, opponent, ids, "vs", 20)
    everyone = assign.build_pairs(systems, opponent, ids, "all", 20)
    assert Counter((i.system_a, i.system_b) for i in vs) == {
        ("runSECRETalpha/greedy", "runSECRETalpha/original"): 12,
        ("runSECRETalpha/topk", "runSECRETalpha/original"): 12}
    assert len(everyone) == 36  # 3 pairs of systems x 12 contexts


def test_stored_assignments_match_the_plan(study):
    conn = store.connect(study)
    per_item = conn.execute("SELECT item, COUNT(DISTINCT annotator) FROM assignments s JOIN items i "
                            "ON i.id = s.item WHERE i.kind = 'pair' GROUP BY item").fetchall()
    assert len(per_item) == 12 and {r[1] for r in per_item} == {3}
    checks = conn.execute("SELECT COUNT(DISTINCT s.annotator) FROM assignments s JOIN items i "
                          "ON i.id = s.item WHERE i.kind = 'check' GROUP BY item").fetchall()
    assert [r[0] for r in checks] == [1, 1, 1, 1]  # each annotator has their own check
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def contexts_per_annotator(study_dir):
    conn = store.connect(study_dir)
    try:
        return conn.execute("SELECT s.annotator, i.kind, i.context_id, i.text_a FROM assignments s "
                            "JOIN items i ON i.id = s.item").fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("annotators, k, rate", [("4", None, "5%"), ("4", "2", "10%"), ("7", "3", "20%"),
                                                  ("9", "1", "50%")])
def test_design_every_annotator_sees_each_context_once_and_each_check_once(tmp_path, annotators, k, rate):
    # The case: two --from files against the human text, 4 annotators. Before, one annotator got
    # the same context twice (147 times in the demo study), the repeated text being the human one.
    from study_fixtures import create

    a = make_run(tmp_path, n=24, tag="greedy", tag_seed=1)
    b = make_run(tmp_path, n=24, tag="topk", tag_seed=2, decoder="top_k")
    study = create(tmp_path / "study", a, "--from", str(b), "--annotators", annotators, "--attention-checks", rate,
                   *(["--raters-per-item", k] if k else []))
    rows = contexts_per_annotator(study)
    per = Counter((r["annotator"], r["context_id"]) for r in rows)
    assert set(per.values()) == {1}  # pairs and checks together: no context twice for anyone
    # No check twice in a queue (the same check came 2-3 times per queue before), and there are checks.
    checks = [(r["annotator"], r["context_id"], r["text_a"]) for r in rows if r["kind"] == "check"]
    assert len(checks) == len(set(checks)) and checks
    conn = store.connect(study)
    want = int(k or 2)  # default with 4 annotators, 2 items per context: the most possible, 2
    raters = [r[0] for r in conn.execute("SELECT COUNT(*) FROM assignments s JOIN items i ON i.id = s.item "
                                         "WHERE i.kind = 'pair' GROUP BY s.item")]
    assert set(raters) == {want}
    conn.close()


def test_create_refuses_a_design_that_would_repeat_a_context_and_names_the_most_k(tmp_path, capsys):
    from hyperfit.study.cli import main

    a = make_run(tmp_path, tag="greedy", tag_seed=1)
    b = make_run(tmp_path, tag="topk", tag_seed=2, decoder="top_k")
    study = tmp_path / "study"
    assert main(["create", str(study), "--from", str(a), "--from", str(b), "--annotators", "4",
                 "--raters-per-item", "3"]) == 2
    err = capsys.readouterr().err
    assert "2 x 3 = 6 different annotators" in err and "--raters-per-item 2" in err and not study.exists()
