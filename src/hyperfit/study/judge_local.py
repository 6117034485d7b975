"""A local LLM judge through transformers: `hyperfit study judge STUDY_DIR --model PATH_OR_HUB_ID`.

The same prompt, both orders and "a preference must survive the swap" rule as the endpoint judge
(judge.py), on exactly the blinded texts the annotators see. The model does not generate: each answer
("A", "B", "EQUAL") is scored by its log-probability after the prompt (wrapped in the tokenizer's chat
template when it has one), and the most likely one is the reply, so a small or base model cannot answer
off-format and "EQUAL" (a tie) is always an option. Only `study judge --model` imports this module (and
with it torch and transformers), never the annotation server.

What a real judge needs: an instruction-tuned model of ~7B+ parameters (a 1B model barely beats its own
position bias), a GPU with memory for it in bf16 (~16 GB for 7-8B), and a context of at least
(context + two continuations) tokens, ~1k for the paper's 256-token continuations. A prompt longer than
the model's context is cut from the left (the question, at the end, always stays), and reported.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hyperfit.study import StudyError, judge

ANSWERS = ("A", "B", "EQUAL")


class LocalJudge:
    """answer(prompt) -> "A" | "B" | "EQUAL", the likeliest of the three under the model."""

    def __init__(self, model: str, device: str | None = None, log=print):
        try:
            self.tok = AutoTokenizer.from_pretrained(model)
            dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        except (OSError, ValueError) as e:
            raise StudyError(f"--model {model!r}: cannot load it with transformers ({e}). Pass a local model "
                             "directory or a hub id that is downloaded (HF_HUB_OFFLINE=1 needs it cached).") from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        cfg = self.model.config
        self.max_len = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 4096
        self.log, self.cut = log, 0

    def prefix(self, prompt: str) -> list[int]:
        if self.tok.chat_template:
            ids = self.tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        return self.tok(prompt + "\nAnswer:", add_special_tokens=True)["input_ids"]

    def scores(self, prompt: str) -> dict[str, float]:
        """Sum of log-probabilities of each answer's tokens after the prompt (the three in one batch)."""
        head = self.prefix(prompt)
        space = "" if self.tok.chat_template else " "
        tails = [self.tok(space + a, add_special_tokens=False)["input_ids"] for a in ANSWERS]
        room = self.max_len - max(map(len, tails))
        if len(head) > room:
            self.cut += 1
            head = head[-room:]
        width = len(head) + max(map(len, tails))
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else (self.tok.eos_token_id or 0)
        ids = torch.tensor([head + t + [pad] * (width - len(head) - len(t)) for t in tails], device=self.device)
        mask = torch.tensor([[1] * (len(head) + len(t)) + [0] * (width - len(head) - len(t)) for t in tails],
                            device=self.device)
        with torch.no_grad():
            logp = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        out = {}
        for row, (answer, tail) in enumerate(zip(ANSWERS, tails)):
            positions = torch.arange(len(head) - 1, len(head) - 1 + len(tail), device=self.device)
            out[answer] = float(logp[row, positions, torch.tensor(tail, device=self.device)].sum())
        return out

    def __call__(self, prompt: str) -> str:
        s = self.scores(prompt)
        return max(ANSWERS, key=lambda a: s[a])


def run_local_judge(study_dir: Path, model: str, limit: int | None = None, log=print) -> int:
    """Judge the study's items with a local model; stored as `judge:<model>` like the endpoint judge."""
    local = LocalJudge(model, log=log)
    name = Path(model).name if Path(model).exists() else model
    n = judge.judge_items(study_dir, name, local, limit, log)
    if local.cut:
        log(f"note: {local.cut} prompt(s) were longer than the model's {local.max_len} positions and were cut "
            "from the left; a real judge needs a longer context (see docs/study.md)")
    return n
