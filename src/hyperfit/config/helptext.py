"""The help of every config field, read from the docstrings under the fields in `schema.py`.

    hyperfit run --help                     # `help_text()` is the epilog of run, train, compare, ...
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from dataclasses import fields
from functools import cache

from hyperfit.config.schema import RunConfig


@cache
def field_docs(cls) -> dict[str, str]:
    """{field name: docstring} for a config dataclass, from the string literal below each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def help_text(width: int = 100) -> str:
    """Every field with its default and meaning, grouped by section."""
    lines = []
    defaults = RunConfig()
    for section in ("", "data", "model", "train", "generate", "evaluate"):
        obj = getattr(defaults, section) if section else defaults
        docs = field_docs(type(obj))
        lines.append(f"{section or 'run'}:")
        for f in fields(obj):
            if dataclasses.is_dataclass(getattr(obj, f.name)):
                continue
            key = f"{section}.{f.name}" if section else f.name
            default = getattr(obj, f.name)
            default = ",".join(map(str, default)) if isinstance(default, tuple) else default
            lines.append(f"  {key}={default}")
            lines += textwrap.wrap(docs.get(f.name, ""), width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)
