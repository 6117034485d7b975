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
from dataclasses import dataclass

from hyperfit.study import StudyError
from hyperfit.study.sources import System, last_sentence, truncate_pair

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
                design: str, max_words: int) -> list[Item]:
    """One item per (context, system pair), both sides truncated by the same rule.

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
        context = (opponent or systems[0]).contexts[cid]
        for a, b in matchups:
            text_a, text_b = truncate_pair(a.texts[cid], b.texts[cid], max_words)
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


def check_for(annotator_contexts: set[str], pairs: list[Item], rng: random.Random) -> Item:
    """An attention check that teaches the annotator nothing about the pairs they judge.

    A check's good side is a real continuation, shown as the right answer: built from a pair in the
    annotator's own queue, it marked that pair's b side (the original, in the paper's design) before the
    pair came up. So checks come from contexts the annotator does not judge; when they judge every
    context, the good side is a or b at random, and seeing it again says nothing about which system wrote it.
    """
    unseen = [p for p in pairs if p.context_id not in annotator_contexts]
    if unseen:
        return build_check(rng.choice(unseen))
    return build_check(rng.choice(pairs), side=rng.choice("ab"))


def n_checks(n_real: int, rate: float) -> int:
    """Checks per annotator: `rate` of their real items, at least one when the rate is above zero."""
    return 0 if rate <= 0 or n_real == 0 else max(1, round(rate * n_real))


def distribute(n_items: int, annotators: list[str], k: int, rng: random.Random) -> dict[str, list[int]]:
    """Give each item to k distinct annotators, with loads differing by at most one.

    Items and annotators are shuffled, then item i goes to the k annotators at positions
    i*k .. i*k+k-1 (mod N) of the shuffled list: consecutive positions are distinct when k <= N, and the
    round robin keeps everyone's load within one item of n_items * k / N.
    """
    if not 1 <= k <= len(annotators):
        raise StudyError(f"--raters-per-item {k} needs at least {k} annotators, got {len(annotators)}; "
                         f"pass --annotators {max(k, 1)} (or more), or lower --raters-per-item.")
    people = annotators[:]
    rng.shuffle(people)
    order = list(range(n_items))
    rng.shuffle(order)
    queues: dict[str, list[int]] = {a: [] for a in annotators}
    for slot, item in enumerate(order):
        for j in range(k):
            queues[people[(slot * k + j) % len(people)]].append(item)
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


def plan_study(pairs: list[Item], annotators: list[str], k: int, check_rate: float, seed: int) -> Plan:
    """Assign the pairs, add each annotator's own attention checks, and shuffle each queue."""
    rng = random.Random(seed)
    queues = distribute(len(pairs), annotators, k, rng)
    items = list(pairs)
    for annotator in annotators:
        # Seeded per annotator, so adding an annotator to a new study does not reshuffle the others.
        own = random.Random(f"{seed}:{annotator}")
        judged = {pairs[i].context_id for i in queues[annotator]}
        for _ in range(n_checks(len(queues[annotator]), check_rate)):
            items.append(check_for(judged, pairs, own))
            queues[annotator].append(len(items) - 1)
        own.shuffle(queues[annotator])
    return Plan(items, queues)


def parse_rate(text: str) -> float:
    """`"5%"` -> 0.05, `"0.05"` -> 0.05; the share of a queue that is attention checks."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise StudyError(f"--attention-checks {text!r} is not a rate; pass e.g. 5% or 0.05.") from None
    if not 0 <= value <= 0.5 or math.isnan(value):
        raise StudyError(f"--attention-checks {text!r} is outside 0%..50%; pass e.g. 5%.")
    return value
