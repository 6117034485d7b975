"""The automatic judge against a fake OpenAI-compatible endpoint on 127.0.0.1 (http.server in a thread)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hyperfit.study import judge, store
from hyperfit.study.cli import main


def has_loop(text: str) -> bool:
    words = text.split()
    grams = list(zip(*[words[i:] for i in range(5)]))
    return len(set(grams)) < len(grams)


class FakeChat(BaseHTTPRequestHandler):
    """Answers like a position-biased judge ("A") unless one side is an obvious loop."""

    seen: list[dict] = []
    status = 200

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        prompt = body["messages"][0]["content"]
        a, b = re.findall(r"Continuation [AB]:\n<<<(.*?)>>>", prompt, re.S)
        answer = "B" if has_loop(a) else "A" if has_loop(b) else "A."
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(FakeChat.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    FakeChat.seen, FakeChat.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    thread.join(timeout=10)


def test_parse_and_swap_rule():
    assert [judge.parse_answer(t) for t in ("B.", "Equal", "**A**", "maybe")] == ["B", "EQUAL", "A", None]
    assert judge.verdict("A", "B") == "a" and judge.verdict("B", "A") == "b"
    assert judge.verdict("A", "A") == "equal" and judge.verdict(None, "B") == "equal"
    assert judge.chat_url("http://h/v1/") == "http://h/v1/chat/completions"
    assert judge.chat_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


def test_judge_rates_every_item_in_both_orders_as_a_pseudo_annotator(study, endpoint, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    argv = ["judge", str(study), "--endpoint", endpoint, "--model", "fake-model", "--api-key-env", "FAKE_KEY"]
    assert main(argv) == 0
    assert "judged 16 items" in capsys.readouterr().out  # 12 pairs + 4 attention checks
    assert len(FakeChat.seen) == 32 and {s["path"] for s in FakeChat.seen} == {"/v1/chat/completions"}
    assert {s["auth"] for s in FakeChat.seen} == {"Bearer sk-test"}
    assert {s["body"]["model"] for s in FakeChat.seen} == {"fake-model"}
    conn = store.connect(study)
    rows = conn.execute("SELECT i.kind, j.winner FROM judgements j JOIN items i ON i.id = j.item "
                        "WHERE j.annotator = 'judge:fake-model'").fetchall()
    conn.close()
    # Always "A" on real pairs: the preference flips with the order, so it counts as equal.
    assert sorted(set(map(tuple, rows))) == [("check", "a"), ("pair", "equal")] and len(rows) == 16
    assert len((study / "judge-fake-model.jsonl").read_text().splitlines()) == 16

    assert main(argv) == 0 and "judged 0 items" in capsys.readouterr().out  # resumes: nothing left
    assert main(["results", str(study)]) == 0
    md = (study / "results.md").read_text()
    assert "Automatic judge `judge:fake-model`" in md and "**100.0 %**" in md
    assert "from 0 annotators" in md  # humans untouched by the judge


def test_judge_endpoint_errors_are_explained(study, endpoint, capsys):
    FakeChat.status = 500
    assert main(["judge", str(study), "--endpoint", endpoint, "--model", "m"]) == 2
    assert "answered HTTP 500" in capsys.readouterr().err
    assert main(["judge", str(study), "--endpoint", endpoint, "--model", "m", "--api-key-env", "NOPE_UNSET"]) == 2
    assert "NOPE_UNSET: that environment variable is not set" in capsys.readouterr().err


CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


@pytest.mark.parametrize("chat", [False, True])
def test_local_judge_with_a_tiny_model_both_orders_and_agreement_with_humans(tmp_path, study, chat, capsys):
    pytest.importorskip("torch")
    from hyperfit.study import judge_local
    from tinymodels import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny-judge")
    if chat:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
        tok.chat_template = CHAT_TEMPLATE
        tok.save_pretrained(model)
    prompts = []
    local = judge_local.LocalJudge(str(model))
    real = local.prefix
    local.prefix = lambda p: (prompts.append(p), real(p))[1]
    scores = local.scores("Beginning:\n<<<x>>>\nWhich?")
    assert set(scores) == {"A", "B", "EQUAL"} and all(v < 0 for v in scores.values())
    import torch  # the batched, padded scores equal each answer scored alone

    head = local.prefix("Beginning:\n<<<x>>>\nWhich?")
    for answer, score in scores.items():
        tail = local.tok(("" if chat else " ") + answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([head + tail])
        with torch.no_grad():
            logp = torch.log_softmax(local.model(ids).logits[0, -len(tail) - 1:-1], -1)
        assert score == pytest.approx(float(logp.gather(1, ids[0, -len(tail):, None]).sum()), abs=1e-4)
    prompts.clear()
    n = judge.judge_items(study, "tiny-judge", local, limit=4)
    assert n == 4 and len(prompts) == 8  # both orders of each item
    conn = store.connect(study)
    shown = conn.execute("SELECT context, text_a, text_b FROM items WHERE id = 1").fetchone()
    assert all(t in prompts[0] for t in shown) and prompts[1].index(shown[2]) < prompts[1].index(shown[1])
    assert "SECRET" not in "".join(prompts)  # the judge sees only the blinded texts
    # Humans judge the same items: results report the judge beside them, and their agreement.
    for r in conn.execute("SELECT annotator, pos FROM assignments WHERE annotator LIKE 'ann-%'").fetchall():
        store.record(conn, r["annotator"], r["pos"], "left")
    assert main(["judge", str(study), "--model", str(model), "--limit", "4"]) == 0  # the rest, through the CLI
    assert main(["results", str(study)]) == 0
    md = (study / "results.md").read_text()
    assert "## Automatic judge `judge:tiny-judge`" in md and "Agreement with the humans on" in md
    summary = json.loads(next((study.parent / "runs").rglob("human_study-study.json")).read_text())["results"]
    agree = summary["judge_agreement"]["judge:tiny-judge"]
    assert agree["items"] > 0 and 0 <= agree["raw_agreement"] <= 1
