"""Blind pairwise human evaluation of continuations (the paper's "preferred or equal" study).

    hyperfit study create STUDY_DIR --from runs/NAME/generations/greedy.jsonl --vs original \
        --annotators 6 --raters-per-item 3 --attention-checks 5%
    hyperfit study serve STUDY_DIR            # prints one private link per annotator
    hyperfit study status STUDY_DIR
    hyperfit study results STUDY_DIR          # results.md / results.csv (+ RUN_DIR/metrics/human_study-STUDY.json)

Modules: `sources` reads generations and applies the truncation rule, `assign` builds items, attention
checks, queues and the blinding, `store` is the SQLite study directory, `server` the annotation web app,
`analysis` the statistics, `results` writes them, `judge` an optional LLM judge, `cli` the commands.
Nothing in this package imports torch or transformers: the annotation server must start in a second on a
machine without them.
"""

from hyperfit.errors import HyperfitError


class StudyError(HyperfitError, ValueError):
    """A problem with the user's input or study directory; the message says what, the value, and the fix."""
