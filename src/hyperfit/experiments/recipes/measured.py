"""What Table 1 and Table 4 read from a finished cell: every measured generation.

    for g in measured(RunDir(cell.path)): g.checkpoint, g.decoder, g.block, g.length, g.metrics

Reads files only (metrics/*.json and the first row of each generations file), so a table can be rebuilt
while a sweep runs elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

from hyperfit.runs import RunDir


@dataclass(frozen=True)
class Measured:
    tag: str
    checkpoint: str | None
    """base, final, ...; None for the human continuations."""
    decoder: str
    block: int | None
    """The citation blocker's n-gram length, or None."""
    length: int | None
    metrics: dict
    """The whole metrics/<tag>.json."""

    def value(self, name: str, domain: str | None = None) -> float | None:
        """A metric's value over one domain, the mean over domains ("average"), or over every context (None)."""
        m = self.metrics
        if domain == "average":
            return m.get("domain_mean", {}).get(name)
        if domain is not None:
            return m.get("domains", {}).get(domain, {}).get("metrics", {}).get(name)
        return m["metrics"].get(name, {}).get("value")

    def perplexity(self, domain: str | None = None) -> float | None:
        """Teacher-forced perplexity of these weights on a domain's documents, their mean over domains
        ("average"), or on the validation text (None, or a run without domains)."""
        per = self.metrics.get("predictive_domains") or {}
        if domain == "average" and per:
            return fmean(p["perplexity"] for p in per.values())
        if domain in per:
            return per[domain]["perplexity"]
        return (self.metrics.get("predictive") or {}).get("perplexity") if domain in (None, "average") else None

    @property
    def domains(self) -> list[str]:
        return list(self.metrics.get("domains", {}))


def measured(run: RunDir) -> list[Measured]:
    """Every metrics file of generations (and of the human continuations) in a run, by tag."""
    out = []
    for path in sorted(run.metrics.glob("*.json")) if run.metrics.is_dir() else []:
        m = json.loads(path.read_text())
        if "metrics" not in m:
            continue  # a human study's results
        if m.get("decoder") == "human":
            out.append(Measured(m["tag"], None, "human", None, m.get("tokens_asked"), m))
            continue
        block = None
        gen = run.generation_file(m["tag"])
        if gen.is_file():
            with open(gen, encoding="utf-8") as f:
                first = json.loads(f.readline() or "{}")
            block = first.get("block_ngrams")
        length = (m.get("decoder_config") or {}).get("max_new_tokens")
        out.append(Measured(m["tag"], m.get("checkpoint"), m.get("decoder"), block, length, m))
    return out


def model_label(config: dict) -> str:
    """A cell's model as a table names it: the last part of model.name."""
    return Path(str(config["model"]["name"])).name
