"""Fuzzing: malformed configs and data files give a HyperfitError or a valid result, never a traceback.

Hypothesis builds YAML configs (random nesting, unknown keys, wrong types, huge ints, nan/inf, duplicate keys,
non-mapping documents, binary garbage), `key.sub=value` overrides (malformed ones too) and data files
(.txt/.md/.jsonl/.json/.csv with broken JSON, wrong fields, non-string values, BOMs, CRLF, NUL bytes,
non-UTF-8 bytes, lone surrogate escapes). Each must load, or fail with a HyperfitError; a failed prepare_data
writes no data/. Inputs that once raised something else are kept as @example or a plain test below.
"""

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from hyperfit.cli import main
from hyperfit.config import DataConfig, RunConfig, from_dict, load_config, to_dict
from hyperfit.errors import ConfigError, DataError, HyperfitError
from hyperfit.runs import RunDir
from hyperfit.stages.data import prepare_data, read_documents
from tinymodels import WORDS, build_tokenizer, make_corpus

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
HUGE = 10**400  # past any float and any 64-bit int: float() and math.isfinite() overflow on it
DEEP = "[" * 600 + "]" * 600  # past Python's recursion limit in PyYAML (a few frames a level; deeper is slow)
DEEP_JSON = "[" * 1100 + "]" * 1100  # ... and in json (a frame a level)
LONG_INT = "1" * 5000  # past Python's 4300-digit limit for int(str): a ValueError in PyYAML and json
SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig)}
FIELDS = {f.name: [g.name for g in dataclasses.fields(f.default_factory)] for f in dataclasses.fields(RunConfig)
          if f.default_factory is not dataclasses.MISSING}  # section -> its field names


def _tmp(suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, dir=_tmp.dir)
    os.close(fd)
    return Path(name)


@pytest.fixture(scope="module", autouse=True)
def _tmp_dir(tmp_path_factory):
    _tmp.dir = tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------------------------------------------------
# Configs

SPECIAL_TEXT = ["1e400", ".nan", ".inf", "-.inf", "yes", "off", "0755", "2024-01-05", "1_000", "None", "null", "",
                "~", "0x1F", "1e-4", "2024-13-45", "!!bool x", "!!int 0x", "!!set [1]", "[0.9]", "{top_p: 0.95}",
                "greedy", "top_p", "ttr", "final", "epoch-0001"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.integers(), st.sampled_from([HUGE, -HUGE, 2**63, 2**32]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(SPECIAL_TEXT), st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(sorted({k for ks in FIELDS.values() for k in ks} | set(SECTIONS))),
                 st.text(max_size=8), st.integers(-2, 2), st.booleans(), st.none())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=8)


@st.composite
def sections(draw, name):
    """A section: mostly its own field names, some unknown ones, any values (or not a mapping at all)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    names = st.sampled_from(FIELDS[name]) | keys
    return draw(st.dictionaries(names, values, max_size=5))


@st.composite
def config_docs(draw):
    """A parsed config document: usually a mapping of sections, sometimes anything YAML can hold."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    doc = {name: draw(sections(name)) for name in draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=5))}
    if draw(st.booleans()):
        doc["data"] = {**(doc["data"] if isinstance(doc.get("data"), dict) else {}), "source": "stories.txt"}
    doc.update(draw(st.dictionaries(keys, values, max_size=2)))
    return doc


def _dump(doc) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:  # a key YAML cannot dump: an empty document instead
        return ""


@st.composite
def config_bytes(draw):
    """The bytes of a config file: dumped documents, mangled text, duplicate keys, or garbage."""
    kind = draw(st.sampled_from(["doc", "doc", "doc", "mangled", "duplicate", "unquoted", "text", "binary", "latin1"]))
    if kind == "unquoted":  # scalars as a person types them, which YAML 1.1 types itself (dates, octal, tags)
        section = draw(st.sampled_from(sorted(FIELDS)))
        items = draw(st.lists(st.tuples(st.sampled_from(FIELDS[section]), st.sampled_from(SPECIAL_TEXT + [LONG_INT])),
                              min_size=1, max_size=4))
        return ("data:\n  source: x\n" * (section != "data") + f"{section}:\n"
                + "".join(f"  {k}: {v}\n" for k, v in items)).encode()
    if kind == "text":
        return draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    if kind == "binary":
        return draw(st.binary(max_size=60))
    text = _dump(draw(config_docs()))
    if kind == "duplicate" and text:  # one line given twice: a key repeated in its mapping
        lines = text.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        text = "\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1 :])
    if kind == "mangled" and text:
        i = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(["\t", "[", "{", ": ", "- ", "&a ", "*a", "!!python/object:os.system ",
                                     "\x00", "\ufeff", "%YAML 1.1\n", "!!int ", "!!timestamp ", "!!set ", "---\n",
                                     "\r\n", "<<: ", "? ", "'", '"']))
        text = text[:i] + junk + text[draw(st.integers(i, len(text))):]
    data = text.encode("utf-8", "surrogatepass")
    return b"\xe9" + data if kind == "latin1" else data


def _check_config(path: Path | None, overrides=()) -> None:
    try:
        cfg = load_config(path, overrides)
    except HyperfitError as e:
        assert isinstance(e, ConfigError) and str(e)
        return event("ConfigError")
    event("RunConfig")
    assert isinstance(cfg, RunConfig)
    assert from_dict(to_dict(cfg)) == cfg  # a valid config round-trips through the YAML a run directory saves


@settings(FUZZ, max_examples=150)
@given(config_bytes())
@example("data: {source: x}\ntrain: {lr: 1" + "0" * 400 + "}\n")  # float(int) overflowed
@example("data: {source: x, seq_len: 1" + "0" * 400 + "}\n")  # math.isfinite(int) overflowed
@example("data: {source: x}\ntrain: {betas: [1" + "0" * 400 + ", 0.5]}\n")
@example("data: {source: x}\ngenerate: {decoder: top_k, params: {top_k: 1" + "0" * 400 + "}}\n")
@example("data: {source: x}\ngenerate: {decoder: top_p, params: {top_p: 1" + "0" * 400 + "}}\n")
@example("data: " + DEEP + "\n")  # RecursionError in PyYAML
@example("data: {source: x}\nanchors: &a [*a]\n")  # BaseLoader's ConstructorError escaped read_config_file
@example("data: {source: x, seq_len: 2024-13-45}\n")  # ValueError from PyYAML's date constructor
@example("data: {source: x, seq_len: " + LONG_INT + "}\n")  # ValueError from int(str) in PyYAML
@example("a: !!bool xyz\n")  # KeyError
@example("a: !!timestamp xyz\n")  # AttributeError
@example("a: !!float ''\n")  # IndexError
@example("a: !!set [1]\n")  # TypeError
@example(b"\xff\xfe")
@example("[1, 2]")
@example("data: {source: x}\ndata: {seq_len: 8}\n")
def test_config_files_load_or_fail_clearly(content):
    path = _tmp(".yaml")
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    _check_config(path)


DOTTED = sorted({f"{s}.{k}" for s, ks in FIELDS.items() for k in ks} | set(SECTIONS)
                | {"generate.params.top_p", "generate.params.top_k", "generate.params.bogus"})
MALFORMED = ["=", "a..b=1", "train.lr=", "", "noequals", "..=..", ".=1", "train..lr=1", "data.seq_len.x=3",
             "data=5", "train=", "train.lr=[", "train.lr={a: 1, a: 2}", "name=a: b: c", "train.lr=\x00",
             "train.betas=" + "9" * 400, "train.lr=" + DEEP, "data.source=x", "data.source=stories.txt"]


@st.composite
def overrides(draw):
    def one():
        if draw(st.integers(0, 3)) == 0:
            return draw(st.sampled_from(MALFORMED) | st.text(max_size=15))
        key = draw(st.sampled_from(DOTTED) | st.text(max_size=10))
        value = draw(st.sampled_from(SPECIAL_TEXT) | st.text(max_size=10) | st.builds(str, scalars)
                     | values.map(lambda v: json.dumps(v, default=str) if not isinstance(v, float) else repr(v)))
        return f"{key}={value}"

    return [one() for _ in range(draw(st.integers(0, 5)))]


@settings(FUZZ, max_examples=150)
@given(overrides(), st.none() | config_bytes())
@example(["data.source=x", "train.lr=\x00"], None)  # ReaderError has no .problem: AttributeError
@example(["data.source=x", "train.lr=\ufffe"], None)
@example(["data.source=x", "train.lr=" + DEEP], None)  # RecursionError in PyYAML
@example(["data.source=x", "data.seed=" + "9" * 400], None)
@example(["data.source=x", "data.seq_len=2024-13-45"], None)  # ValueError from PyYAML
@example(["data.source=x", "data.seq_len=" + LONG_INT], None)
@example(["=", "a..b=1", "train.lr="], None)
@example(["data.source=x", "data=5", "data.seq_len=3"], None)
def test_overrides_apply_or_fail_clearly(items, content):
    path = None
    if content is not None:
        path = _tmp(".yaml")
        path.write_bytes(content)
    _check_config(path, items)


# ---------------------------------------------------------------------------------------------------------
# Data files

texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(WORDS), min_size=0, max_size=40).map(" ".join),
    st.sampled_from(["", " ", "\n", "\x00", "\ufeff", "a\r\nb", "\u2028", "x" * 3000, "\ud83d\ude00"]),
)
json_values = st.one_of(texts, st.integers(), st.floats(), st.booleans(), st.none(),
                        st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), texts, max_size=2))
FIELD_NAMES = ["text", "story", "Text", " text", "\ufefftext", ""]


@st.composite
def rows(draw):
    """Records: mostly {text: ...}, sometimes another field, a non-string value, or not an object."""
    out = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind < 6:
            out.append({"text": draw(texts)})
        elif kind < 8:
            out.append({draw(st.sampled_from(FIELD_NAMES)): draw(json_values)})
        else:
            out.append(draw(json_values))
    return out


def _json_lines(draw, records) -> str:
    lines = []
    for r in records:
        line = json.dumps(r, ensure_ascii=draw(st.booleans()))
        if draw(st.integers(0, 9)) == 0:  # a broken line: cut short, a lone surrogate, or junk
            line = draw(st.sampled_from([line[: len(line) // 2], '{"text": "a\\ud800b"}', "{'text': 'x'}", "NaN",
                                         '{"text": ' + DEEP_JSON + "}", '{"text": ' + LONG_INT + "}",
                                         "", "   "]))
        lines.append(line)
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"]))


def _csv(draw, records) -> str:
    import csv
    import io

    buf = io.StringIO()
    header = draw(st.lists(st.sampled_from(FIELD_NAMES + ["id", "n"]), min_size=0, max_size=3))
    header = header if draw(st.integers(0, 4)) else ["text"]
    writer = csv.writer(buf)
    writer.writerow(header)
    for r in records:
        cells = list(r.values()) if isinstance(r, dict) else [r]
        writer.writerow([c if isinstance(c, str) else json.dumps(c) for c in cells][: draw(st.integers(0, 4))])
    return buf.getvalue()


@st.composite
def data_files(draw):
    """(suffix, bytes) of a data file in one of the formats read_documents reads, with byte-level damage."""
    suffix = draw(st.sampled_from([".txt", ".md", "", ".jsonl", ".json", ".csv", ".JSONL"]))
    records = draw(rows())
    if suffix in (".txt", ".md", ""):
        sep = draw(st.sampled_from(["\n\n", "\n \n", "\r\n\r\n", "\n\t\n", "\n\u00a0\n", "\r\r", "\n"]))
        text = sep.join(r["text"] if isinstance(r, dict) and isinstance(r.get("text"), str) else str(r)
                        for r in records)
    elif suffix == ".json" and draw(st.booleans()):
        text = json.dumps(records)
    elif suffix == ".csv":
        text = _csv(draw, records)
    else:
        text = _json_lines(draw, records)
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    data = text.encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none", "none", "none", "bom", "nul", "latin1", "truncate", "empty", "binary"]))
    if damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage in ("nul", "latin1"):
        i = draw(st.integers(0, len(data)))
        data = data[:i] + (b"\x00" if damage == "nul" else b"\xe9\xff") + data[i:]
    elif damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "empty":
        data = b""
    elif damage == "binary":
        data = draw(st.binary(max_size=80))
    return suffix, data


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(make_corpus())


def _check_data(suffix: str, content: bytes, tokenizer, text_field="text", seq_len=8, counts=(2, 1, 1),
                max_documents=None) -> None:
    path = _tmp(suffix)
    path.write_bytes(content)
    num_train, num_val, num_contexts = counts
    cfg = DataConfig(source=str(path), text_field=text_field, seq_len=seq_len, context_len=min(4, seq_len - 1),
                     num_train=num_train, num_val=num_val, num_contexts=num_contexts, max_documents=max_documents)
    try:
        docs = read_documents(cfg)
    except HyperfitError as e:
        assert isinstance(e, DataError) and str(e)
        return event("read_documents: DataError")
    assert docs and all(isinstance(d, str) and d and d == d.strip() for d in docs)
    run = RunDir(Path(tempfile.mkdtemp(dir=_tmp.dir)) / "run")
    try:
        manifest = prepare_data(cfg, tokenizer, run)
    except HyperfitError as e:
        assert isinstance(e, DataError) and str(e)
        assert not run.data.exists(), "a failed prepare_data left data/ behind"
        return event("prepare_data: DataError")
    event("prepare_data: manifest")
    assert (manifest["train"], manifest["val"], manifest["contexts"]) == counts
    assert all((run.data / f).is_file() for f in ("train.jsonl", "val.jsonl", "contexts.jsonl", "manifest.json"))


@settings(FUZZ, max_examples=80)
@given(data_files(), st.sampled_from(["text"] * 4 + FIELD_NAMES), st.integers(2, 12),
       st.tuples(st.integers(1, 3), st.integers(0, 2), st.integers(0, 2)), st.none() | st.integers(1, 5))
@example((".jsonl", b'{"text": "a\\ud800b"}\n'), "text", 4, (1, 0, 0), None)  # tokenizer TypeError
@example((".json", b'[{"text": "the cat \\udc00 ran"}]'), "text", 4, (1, 0, 0), None)
@example((".jsonl", b'{"text": ' + DEEP_JSON.encode() + b"}\n"), "text", 4, (1, 0, 0), None)  # RecursionError
@example((".json", DEEP_JSON.encode()), "text", 4, (1, 0, 0), None)
@example((".jsonl", b'{"text": ' + LONG_INT.encode() + b"}\n"), "text", 4, (1, 0, 0), None)  # int(str) ValueError
@example((".csv", b"\x00text\r\nabc\r\n"), "text", 4, (1, 0, 0), None)
@example((".txt", b"\xef\xbb\xbf\x00\x00\r\n\r\n" + b"the cat " * 20), "text", 4, (1, 1, 0), None)
def test_data_files_prepare_or_fail_clearly(tokenizer, file, text_field, seq_len, counts, max_documents):
    _check_data(*file, tokenizer, text_field, seq_len, counts, max_documents)


# ---------------------------------------------------------------------------------------------------------
# Through the CLI: exit 2, one `hyperfit <command>: error:` line, no traceback


def _cli_error(capsys, argv, lines=1) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hyperfit {argv[0]}: error: ") and "Traceback" not in err, err
    if lines:
        assert err.count("\n") == lines, err
    return err


@pytest.mark.parametrize("content,match", [
    ("data: " + DEEP + "\n", "nested too deeply"),
    ("data: {source: x}\nanchors: &a [*a]\n", "not valid YAML"),
    (b"\xff\xfe\x00", "cannot be read"),
    ("- a\n- b\n", "must hold a mapping of sections, got list"),
    ("data: {source: x, seq_len: 2024-13-45}\n", "cannot build a value (month must be in 1..12)"),
])
def test_cli_run_refuses_malformed_config_files(capsys, content, match):
    path = _tmp(".yaml")
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    assert match in _cli_error(capsys, ["run", str(path)], lines=0)


@pytest.mark.parametrize("override,match", [
    ("train.lr=\x00", "not valid YAML (unacceptable character #x0000"),
    ("train.lr=" + DEEP, "nested too deeply"),
    ("train.lr=" + "9" * 400, "is not a valid float"),
    ("data.seq_len=" + "9" * 400, "must fit in 64 bits and be at least 2"),
    ("=", "is not of the form key.sub=value"),
])
def test_cli_run_refuses_malformed_overrides(capsys, override, match):
    lines = 2 if "fit in" in match or "valid float" in match else 1  # "invalid configuration:" + one problem
    assert match in _cli_error(capsys, ["run", "data.source=x", override], lines=lines)


@settings(FUZZ, max_examples=30)
@given(overrides())
@example(["train.betas=" + "9" * 400])  # Path(arg).is_file() raised OSError ENAMETOOLONG in cmd_run
@example(["x" * 5000])  # ... and in load_config, read as the config file's path
def test_cli_run_fuzzed_overrides_never_traceback(capsys, items):
    # The trailing `data.source=` unsets the source, so no run ever starts (nor writes): every call is an error.
    items = [i for i in items if not i.startswith("-")]
    _cli_error(capsys, ["run", *items, "data.source="], lines=0)


def test_names_too_long_for_the_file_system_fail_clearly():
    # Path.is_file() and is_dir() raise OSError (ENAMETOOLONG) for these instead of answering False.
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("x" * 5000 + ".yaml")
    with pytest.raises(DataError, match="File name too long, 5004 characters"):
        read_documents(DataConfig(source="x" * 5000 + ".txt"))


@pytest.fixture(scope="module")
def run_with_tokenizer(tmp_path_factory, tokenizer):
    from transformers import LlamaConfig

    root = tmp_path_factory.mktemp("cli-data")
    tokenizer.save_pretrained(root / "model")  # the data stage loads only the tokenizer: no weights needed
    LlamaConfig().save_pretrained(root / "model")
    cfg = load_config(None, [f"model.name={root / 'model'}", "data.source=x.txt", "data.seq_len=4",
                             "data.context_len=2", "data.num_train=1", "data.num_val=0", "data.num_contexts=0"])
    (root / "run").mkdir()
    (root / "run" / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return root / "run"


@pytest.mark.parametrize("suffix,content,match", [
    (".jsonl", b'{"text": "a\\ud800b"}\n', "lone UTF-16 surrogate"),
    (".jsonl", b'{"text": ' + DEEP_JSON.encode() + b"}\n", "nests JSON too deeply"),
    (".json", b"[1, 2]", "is a int, not an object"),
    (".jsonl", b'{"text": ' + LONG_INT.encode() + b"}\n", "holds a number JSON cannot read"),
    (".csv", b"story\nthe cat\n", "is not a column"),
    (".txt", b"\xe9t\xe9", "is not UTF-8 text"),
])
def test_cli_data_refuses_malformed_files(capsys, run_with_tokenizer, suffix, content, match):
    path = _tmp(suffix)
    path.write_bytes(content)
    assert match in _cli_error(capsys, ["data", str(run_with_tokenizer), f"data.source={path}"])
    assert not (run_with_tokenizer / "data").exists()
