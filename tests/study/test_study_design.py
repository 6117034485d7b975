"""Study design: truncation rule, item building, assignment, order, checks, blinding placement."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperfit.study import StudyError, assign, store
from hyperfit.study.sources import last_sentence, load_systems, shared_context_ids, truncate_pair, units
from study_fixtures import make_run


def test_truncate_pair_cuts_both_sides_to_the_same_whole_words():
    assert truncate_pair("x y z", "p  q\nr s", 10) == ("x y z", "p q r")
    assert truncate_pair("one two three four", "a b c d e f", 2) == ("one two", "a b")
    a, b = truncate_pair("  lots   of\t\tspace here ", "tidy text here too", 100)
    assert a == "lots of space here" and len(a.split()) == len(b.split())


def test_truncate_pair_ends_both_sides_mid_sentence_so_the_ending_gives_no_side_away():
    # A human story shorter than the model's text: cut to its length, it ended at its final full stop
    # while the model's side stopped mid-sentence (60 of 64 pairs in the demo gave the human side away).
    story = "Tom had a red ball. He played with it all day. Then he went home."
    model = "Tom had a big dog. The dog liked to run in the park with Tom every single day and night."
    a, b = truncate_pair(model, story, 200)
    assert (a, b) == ("Tom had a big dog. The dog liked to run in the park with",
                      "Tom had a red ball. He played with it all day. Then he went")
    assert truncate_pair("Hi! Ok? “Yes.”", "a b c", 10) == ("Hi! Ok? “Yes.”", "a b c")  # nowhere else to cut


def test_last_sentence_and_degenerate_loop():
    context = "It was late. The old dog slept by the fire. Yes."
    assert last_sentence(context) == "The old dog slept by the fire."
    loop = assign.degenerate_loop(context, 10)
    assert loop == "The old dog slept by the fire. The old dog"


def test_distribute_gives_each_item_k_distinct_annotators_with_even_load():
    people = [f"p{i}" for i in range(7)]
    queues = assign.distribute(30, people, 3, random.Random(0))
    raters = Counter(item for q in queues.values() for item in q)
    assert set(raters) == set(range(30)) and set(raters.values()) == {3}
    assert all(len(q) == len(set(q)) for q in queues.values())  # distinct: nobody sees an item twice
    loads = [len(q) for q in queues.values()]
    assert max(loads) - min(loads) <= 1 and sum(loads) == 90


@settings(max_examples=60, deadline=None)
@given(n_items=st.integers(1, 60), n_people=st.integers(1, 12), data=st.data())
def test_distribute_property(n_items, n_people, data):
    k = data.draw(st.integers(1, n_people))
    queues = assign.distribute(n_items, [f"p{i}" for i in range(n_people)], k, random.Random(n_items))
    assert all(len(q) == len(set(q)) for q in queues.values())
    assert Counter(i for q in queues.values() for i in q) == {i: k for i in range(n_items)}
    loads = [len(q) for q in queues.values()]
    assert max(loads) - min(loads) <= 1


@settings(max_examples=100, deadline=None)
@given(a=st.text(), b=st.text(), n=st.integers(1, 30))
def test_truncate_pair_property(a, b, n):
    ta, tb = truncate_pair(a, b, n)
    bare = lambda t: [u.strip() for u in units(t)]  # noqa: E731
    k, most = len(bare(ta)), min(n, len(units(a)), len(units(b)))
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
    assert truncate_pair("日本 ok fine", "one two three four", 3) == ("日本 ok", "one two three")


def test_distribute_rejects_k_above_annotators():
    with pytest.raises(StudyError, match="--raters-per-item 4 needs at least 4 annotators, got 3"):
        assign.distribute(10, ["a", "b", "c"], 4, random.Random(0))


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
