"""Statistics over judgements: the paper's "preferred or equal", CIs, position bias, agreement, BT.

Every function takes plain rows as `store.export_rows` returns them (one dict per judgement with
`system_a`, `system_b`, `winner` in {a, b, equal}, `choice` in {left, right, equal}, ...), so each can be
checked on a hand-made list. Worked example of the headline metric: model-vs-reference judgements with
winners [a, equal, b, a] -> the model (side a) is preferred or rated equal in 3 of 4 -> 0.75.

Libraries do the arithmetic that has a well-kept implementation: scipy (bootstrap CI, binomial test),
krippendorff (alpha), choix (Bradley-Terry).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

PAIR, CHECK = "pair", "check"
CODES = {"a": 0, "b": 1, "equal": 2}  # nominal codes for Krippendorff's alpha


def outcome_rates(winners: list[str]) -> dict:
    """Win / tie / loss counts and shares for side a: `["a", "equal", "b", "a"]` -> win 2, tie 1, loss 1."""
    c = Counter(winners)
    n = len(winners)
    out = {"judgements": n, "win": c["a"], "tie": c["equal"], "loss": c["b"]}
    for key in ("win", "tie", "loss"):
        out[f"{key}_rate"] = out[key] / n if n else math.nan
    out["preferred_or_equal"] = (c["a"] + c["equal"]) / n if n else math.nan
    return out


def bootstrap_ci(item_good: list[int], item_n: list[int], seed: int = 0, n_resamples: int = 10_000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of sum(good) / sum(n), resampling *items* (an item's k judgements move together).

    Resampling items rather than judgements respects that the k ratings of one item are not independent.
    Fewer than two items: (nan, nan), there is nothing to resample.
    """
    from scipy.stats import bootstrap

    if len(item_n) < 2:
        return math.nan, math.nan
    good, n = np.asarray(item_good, float), np.asarray(item_n, float)
    if np.all(good / n == good[0] / n[0]):
        return float(good[0] / n[0]), float(good[0] / n[0])  # no spread: scipy would warn about it
    res = bootstrap((good, n), lambda g, m, axis: g.sum(axis) / m.sum(axis), paired=True,
                    vectorized=True, n_resamples=n_resamples, confidence_level=level,
                    method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def matchups(rows: list[dict], seed: int = 0) -> list[dict]:
    """One line per (system a, system b) pair of systems: win/tie/loss, preferred-or-equal for a, 95 % CI."""
    by_pair: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["kind"] == PAIR:
            by_pair[(r["system_a"], r["system_b"])].append(r)
    out = []
    for (a, b), pair_rows in sorted(by_pair.items()):
        per_item: dict[int, list[str]] = defaultdict(list)
        for r in pair_rows:
            per_item[r["item"]].append(r["winner"])
        good = [sum(w != "b" for w in ws) for ws in per_item.values()]
        n = [len(ws) for ws in per_item.values()]
        low, high = bootstrap_ci(good, n, seed=seed)
        out.append({"system": a, "opponent": b, "items": len(per_item),
                    **outcome_rates([r["winner"] for r in pair_rows]), "ci_low": low, "ci_high": high})
    return out


def position_bias(rows: list[dict]) -> dict:
    """How often the left vs the right side was chosen (pairs only), with a two-sided binomial test.

    Sides are assigned at random, so a fair rater picks left and right equally often among non-ties.
    """
    from scipy.stats import binomtest

    c = Counter(r["choice"] for r in rows if r["kind"] == PAIR)
    decided = c["left"] + c["right"]
    p = binomtest(c["left"], decided, 0.5).pvalue if decided else math.nan
    return {"left": c["left"], "right": c["right"], "equal": c["equal"],
            "left_share": c["left"] / decided if decided else math.nan, "p_value": float(p)}


def krippendorff_alpha(rows: list[dict]) -> dict:
    """Nominal Krippendorff's alpha over pair items (coded a / b / equal), raters x items with gaps.

    Hand example: rater 1 says [a, a, b, equal], rater 2 [a, b, b, equal] -> alpha = 2/3.
    """
    import krippendorff

    raters = sorted({r["annotator"] for r in rows if r["kind"] == PAIR})
    items = sorted({r["item"] for r in rows if r["kind"] == PAIR})
    table = np.full((len(raters), len(items)), np.nan)
    ri, ii = {r: i for i, r in enumerate(raters)}, {t: i for i, t in enumerate(items)}
    for r in rows:
        if r["kind"] == PAIR:
            table[ri[r["annotator"]], ii[r["item"]]] = CODES[r["winner"]]
    multiply_rated = int((np.sum(~np.isnan(table), axis=0) >= 2).sum()) if items else 0
    values = set(table[~np.isnan(table)].tolist())
    # alpha is undefined without an item rated twice, or when only one answer was ever given.
    alpha = (float(krippendorff.alpha(reliability_data=table, level_of_measurement="nominal"))
             if multiply_rated and len(values) > 1 else math.nan)
    return {"krippendorff_alpha": alpha, "items_rated_twice_or_more": multiply_rated, "raters": len(raters)}


def bradley_terry(rows: list[dict]) -> list[dict] | None:
    """Bradley-Terry strengths (choix ILSR, log scale, mean 0), for three or more systems; else None.

    choix has no ties, so a tie counts as one win each way (the usual half-win, doubled). A small
    regularisation (alpha=0.01) keeps scores finite when one system wins every comparison.
    """
    import choix

    pairs = [r for r in rows if r["kind"] == PAIR]
    systems = sorted({r["system_a"] for r in pairs} | {r["system_b"] for r in pairs})
    if len(systems) < 3:
        return None
    index = {s: i for i, s in enumerate(systems)}
    data = []
    for r in pairs:
        a, b = index[r["system_a"]], index[r["system_b"]]
        data += {"a": [(a, b)], "b": [(b, a)], "equal": [(a, b), (b, a)]}[r["winner"]]
    scores = choix.ilsr_pairwise(len(systems), data, alpha=0.01)
    ranked = sorted(zip(systems, scores), key=lambda t: -t[1])
    return [{"system": s, "score": float(v)} for s, v in ranked]


def attention_checks(rows: list[dict]) -> dict[str, dict]:
    """Per annotator: checks answered and failed. Only the real (non-loop) side is right; equal fails."""
    out: dict[str, dict] = {}
    for r in rows:
        if r["kind"] == CHECK:
            entry = out.setdefault(r["annotator"], {"checks": 0, "failed": 0})
            entry["checks"] += 1
            entry["failed"] += r["winner"] != "a"
    return out


SPEEDER_SECONDS = 4.0  # median time on task below this: nobody reads a context and two continuations so fast


def speeders(rows: list[dict], threshold_s: float = SPEEDER_SECONDS) -> dict:
    """Per annotator: median seconds on task; `flagged`, those under threshold_s (e.g. a 0.2 s median)."""
    by: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        if r.get("ms_on_task") is not None:
            by[r["annotator"]].append(r["ms_on_task"])
    medians = {a: float(np.median(ms)) / 1000 for a, ms in sorted(by.items())}
    return {"threshold_seconds": threshold_s, "median_seconds": medians,
            "flagged": [a for a, m in medians.items() if m < threshold_s]}


def coverage(rows: list[dict], design: list[dict], k: int) -> dict:
    """Real coverage: how many judgements each designed pair item got (not the k it was meant to get).

    design: one dict per pair item (item, system_a, system_b). Returns per matchup and overall the number
    of items, of items with at least k judgements, and a histogram {judgements: items}.
    """
    counts = Counter(r["item"] for r in rows if r["kind"] == PAIR)

    def summary(items: list[int]) -> dict:
        hist = Counter(counts.get(i, 0) for i in items)
        return {"items": len(items), "items_with_k": sum(counts.get(i, 0) >= k for i in items),
                "judgements_per_item": {str(n): hist[n] for n in sorted(hist)}}
    by_pair: dict[tuple[str, str], list[int]] = defaultdict(list)
    for d in design:
        by_pair[(d["system_a"], d["system_b"])].append(d["item"])
    return {"k": k, **summary([d["item"] for d in design]),
            "matchups": {f"{a} vs {b}": summary(items) for (a, b), items in sorted(by_pair.items())}}


def median_seconds(rows: list[dict]) -> float:
    ms = [r["ms_on_task"] for r in rows if r.get("ms_on_task") is not None]
    return float(np.median(ms)) / 1000 if ms else math.nan


def summarise(rows: list[dict], seed: int = 0, drop_failed: bool = False, design: list[dict] | None = None,
              k: int | None = None, speeder_seconds: float = SPEEDER_SECONDS) -> dict:
    """Everything `results` reports. Humans and each automatic judge are analysed separately, so a
    judge never changes the human numbers. `drop_failed` removes every judgement of an annotator who
    failed any attention check. design / k: the designed pair items and raters per item, for coverage."""
    humans = [r for r in rows if r["annotator_kind"] == "human"]
    checks = attention_checks(humans)
    failed = sorted(a for a, c in checks.items() if c["failed"])
    if drop_failed:
        humans = [r for r in humans if r["annotator"] not in failed]
    judges = sorted({r["annotator"] for r in rows if r["annotator_kind"] == "judge"})
    return {
        "judgements": len(humans),
        "annotators": len({r["annotator"] for r in humans}),
        "matchups": matchups(humans, seed),
        "position_bias": position_bias(humans),
        "agreement": krippendorff_alpha(humans),
        "bradley_terry": bradley_terry(humans),
        "attention_checks": checks,
        "failed_attention_checks": failed,
        "dropped_annotators": failed if drop_failed else [],
        "median_seconds_per_judgement": median_seconds(humans),
        "speeders": speeders(humans, speeder_seconds),
        "coverage": coverage(humans, design, k) if design is not None and k else None,
        "judge_agreement": {j: judge_agreement(humans, [r for r in rows if r["annotator"] == j]) for j in judges},
        "judges": {j: {"matchups": matchups([r for r in rows if r["annotator"] == j], seed),
                       "attention_checks": attention_checks([r for r in rows if r["annotator"] == j])}
                   for j in judges},
    }


def judge_agreement(humans: list[dict], judge: list[dict]) -> dict:
    """How well an automatic judge agrees with the humans on the pair items both judged.

    Cohen's kappa between the judge's verdict and the humans' majority verdict per item (items with a
    tied majority are skipped), and Krippendorff's alpha with the judge as one more rater.
    """
    by_item: dict[int, list[str]] = defaultdict(list)
    for r in humans:
        if r["kind"] == PAIR:
            by_item[r["item"]].append(r["winner"])
    verdict = {r["item"]: r["winner"] for r in judge if r["kind"] == PAIR}
    pairs = []
    for item, winners in by_item.items():
        if item not in verdict:
            continue
        top = Counter(winners).most_common()
        if len(top) > 1 and top[0][1] == top[1][1]:
            continue
        pairs.append((top[0][0], verdict[item]))
    shared = [r for r in humans + judge if r["kind"] == PAIR and r["item"] in verdict and r["item"] in by_item]
    kappa = math.nan
    if len(pairs) >= 2 and len({x for p in pairs for x in p}) > 1:
        kappa = cohen_kappa([p[0] for p in pairs], [p[1] for p in pairs])
    return {"items": len(pairs), "raw_agreement": sum(a == b for a, b in pairs) / len(pairs) if pairs else math.nan,
            "cohen_kappa_vs_majority": kappa,
            "krippendorff_alpha_with_judge": krippendorff_alpha(shared)["krippendorff_alpha"]}


def cohen_kappa(x: list[str], y: list[str]) -> float:
    """Cohen's kappa of two raters' labels (checked against scikit-learn's cohen_kappa_score in the tests;
    not imported from it, to keep scikit-learn out of the study's dependencies):
    `cohen_kappa(["a", "a", "b", "b"], ["a", "b", "b", "b"])` -> 0.5."""
    n = len(x)
    observed = sum(a == b for a, b in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    expected = sum(cx[c] * cy[c] for c in set(cx) | set(cy)) / (n * n)
    return math.nan if expected == 1 else (observed - expected) / (1 - expected)
