"""Items, attention checks, who judges what, in which order, and on which side: the study's design.

All of it is decided once, at `create`, and stored; the server only reads it back. Randomness comes from
the user's `--seed` (item sample, assignment, order), except the left/right placement, which is an HMAC
of a random per-study secret: stable across reloads, but not predictable by anyone who knows the seed.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import random
from dataclasses import dataclass, field

from hyperfit.study import StudyError
from hyperfit.study.sources import System, last_sentence, split_context, truncate_pair

PAIR, CHECK = "pair", "check"


@dataclass(frozen=True)
class Item:
    """One blinded comparison. For a check, side a is a real continuation and b the degenerate loop."""

    kind: str
    context_id: str
    context: str
    text_a: str
    text_b: str
    system_a: str
    system_b: str | None  # None for a check: its b side is the loop, written by nobody


def build_pairs(systems: list[System], opponent: System | None, ids: list[str],
                design: str, max_words: int | None = None) -> list[Item]:
    """One item per (context, system pair), both sides truncated by the same rule (max_words None: the
    generations' full length). A context cut inside a word hands that word's start to every side
    (sources.split_context), so no word is split across the context box and a continuation.

    design "vs": every --from system against the opponent (the paper's design, model vs human);
    design "all": every pair among all systems (round robin, for Bradley-Terry with many decoders).
    Pairs whose shorter side is empty are skipped: there is nothing to judge.
    """
    everyone = systems + ([opponent] if opponent else [])
    if design == "vs" and opponent is not None:
        matchups = [(s, opponent) for s in systems]
    else:
        matchups = list(itertools.combinations(everyone, 2))
    if not matchups:
        raise StudyError("only one system to compare: pass a second --from file, or --vs original / "
                         "--vs OTHER.jsonl.")
    items = []
    for cid in ids:
        context, moved = split_context((opponent or systems[0]).contexts[cid], [s.texts[cid] for s in everyone])
        texts = {s.name: text for s, text in zip(everyone, moved)}
        for a, b in matchups:
            text_a, text_b = truncate_pair(texts[a.name], texts[b.name], max_words)
            if text_a and text_b:
                items.append(Item(PAIR, cid, context, text_a, text_b, a.name, b.name))
    if not items:
        raise StudyError("every pair has an empty continuation on one side; check the generation files.")
    return items


def degenerate_loop(context: str, n_words: int) -> str:
    """The context's last sentence repeated until it is `n_words` long: an obviously broken continuation."""
    loop = last_sentence(context).split() or ["the"]
    return " ".join(itertools.islice(itertools.cycle(loop), n_words))


def build_check(pair: Item, side: str = "b") -> Item:
    """An attention check from a real item: one of its sides (b: the reference, in the paper's design)
    against a loop. The loop has exactly as many words as the good side, so length gives nothing away.
    """
    text, system = (pair.text_b, pair.system_b or pair.system_a) if side == "b" else (pair.text_a, pair.system_a)
    n = len(text.split())
    return Item(CHECK, pair.context_id, pair.context, text, degenerate_loop(pair.context, n), system, None)


def checks_for(judged: set[str], pairs: list[Item], n: int, rng: random.Random) -> list[Item]:
    """n attention checks from n different contexts the annotator never judges.

    A check's good side is a real continuation, shown as the right answer: from a context in the
    annotator's own queue it would mark that pair's side (the original, in the paper's design) and show the
    context a second time. So each check takes its own context (none shown twice in a queue, no check
    repeated) from the contexts the annotator does not judge; plan_study holds contexts back when there
    are too few.
    """
    by_context: dict[str, Item] = {}
    for p in pairs:
        by_context.setdefault(p.context_id, p)
    unseen = [c for c in by_context if c not in judged]
    return [build_check(by_context[c]) for c in rng.sample(unseen, min(n, len(unseen)))]


def n_checks(n_real: int, rate: float) -> int:
    """Checks per annotator: `rate` of their real items, at least one when the rate is above zero."""
    return 0 if rate <= 0 or n_real == 0 else max(1, round(rate * n_real))


def max_raters(n_annotators: int, items_per_context: int) -> int:
    """The largest k for which each of a context's items reaches k annotators who see that context once."""
    return n_annotators // max(items_per_context, 1)


def distribute(groups: list[list[int]], annotators: list[str], k: int, rng: random.Random) -> dict[str, list[int]]:
    """Give each item to k distinct annotators, no annotator two items of one group (one context), loads
    within one item of each other.

    A group of m items needs m * k different annotators, so k <= N // m. Groups and annotators are
    shuffled, then the items of each group take the next m * k positions of the shuffled annotators, round
    robin: consecutive positions are distinct when m * k <= N, and the round robin keeps loads even.
    """
    m = max((len(g) for g in groups), default=1)
    if k < 1 or m * k > len(annotators):
        most = max_raters(len(annotators), m)
        raise StudyError(
            f"--raters-per-item {k} with {len(annotators)} annotators and {m} item(s) per context: each "
            f"annotator may see a context only once, so a context's items need {m} x {k} = {m * k} different "
            f"annotators. The most this design allows is --raters-per-item {most}"
            + (f"; or pass --annotators {m * k} (or more)." if most >= 1 else f"; pass --annotators {m * k} or more."))
    people = annotators[:]
    rng.shuffle(people)
    order = [g[:] for g in groups]
    rng.shuffle(order)
    queues: dict[str, list[int]] = {a: [] for a in annotators}
    slot = 0
    for group in order:
        rng.shuffle(group)
        for item in group:
            for _ in range(k):
                queues[people[slot % len(people)]].append(item)
                slot += 1
    return queues


def a_on_left(secret: bytes, annotator: str, item_id: int) -> bool:
    """Whether side a is shown on the left to this annotator for this item (HMAC-SHA256 of the pair)."""
    digest = hmac.new(secret, f"{annotator}\0{item_id}".encode(), hashlib.sha256).digest()
    return bool(digest[0] & 1)


@dataclass(frozen=True)
class Plan:
    """The whole design, ready to store: items, and per annotator an ordered queue of item indices."""

    items: list[Item]
    queues: dict[str, list[int]]
    held_back: list[str] = field(default_factory=list)
    """Context ids nobody judges: kept for attention checks (see plan_study)."""


def context_groups(pairs: list[Item]) -> dict[str, list[int]]:
    """context id -> indices of its pair items, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.context_id, []).append(i)
    return groups


def plan_study(pairs: list[Item], annotators: list[str], k: int, check_rate: float, seed: int) -> Plan:
    """Assign the pairs, add each annotator's own attention checks, and shuffle each queue.

    Each annotator sees each context at most once, checks included. When annotators judge so many contexts
    that too few are left for their checks (4 annotators, 2 items per context, k = 2: everyone judges
    everything), contexts are held back from judging, chosen with the seed, just enough for the checks.
    """
    groups = context_groups(pairs)
    ids = list(groups)
    random.Random(f"{seed}:held").shuffle(ids)
    held = 0
    while True:
        judged_ids = ids[:len(ids) - held]
        queues = distribute([groups[c] for c in sorted(judged_ids, key=list(groups).index)], annotators, k,
                            random.Random(seed))
        short = max((n_checks(len(q), check_rate) - (len(ids) - len({pairs[i].context_id for i in q}))
                     for q in queues.values()), default=0)
        if short <= 0 or held + short >= len(ids):
            break
        held += short
    # Only judged contexts' pairs become items (a held-back context's pair would count as never rated).
    held_back = set(ids) - set(judged_ids)
    kept = [i for i, p in enumerate(pairs) if p.context_id not in held_back]
    new_index = {old: new for new, old in enumerate(kept)}
    queues = {a: [new_index[i] for i in q] for a, q in queues.items()}
    items = [pairs[i] for i in kept]
    for annotator in annotators:
        # Seeded per annotator, so adding an annotator to a new study does not reshuffle the others.
        own = random.Random(f"{seed}:{annotator}")
        judged = {items[i].context_id for i in queues[annotator]}
        for check in checks_for(judged, pairs, n_checks(len(queues[annotator]), check_rate), own):
            items.append(check)
            queues[annotator].append(len(items) - 1)
        own.shuffle(queues[annotator])
    return Plan(items, queues, held_back=sorted(held_back, key=list(groups).index))


def parse_rate(text: str) -> float:
    """`"5%"` -> 0.05, `"0.05"` -> 0.05; the share of a queue that is attention checks."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise StudyError(f"--attention-checks {text!r} is not a rate; pass e.g. 5% or 0.05.") from None
    if not 0 <= value <= 0.5 or math.isnan(value):
        raise StudyError(f"--attention-checks {text!r} is outside 0%..50%; pass e.g. 5%.")
    return value
