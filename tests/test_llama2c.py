import math

import pytest
import torch

from hyperfit.llama2c import ImportError_, import_llama2c, unpermute_rotary
from tinymodels import ASSETS, needs_assets


def test_unpermute_rotary_worked_example():
    w = torch.arange(8.0).reshape(4, 2)   # one head, rows r0..r3 (pairs (r0,r1), (r2,r3))
    out = unpermute_rotary(w, n_heads=1)
    assert out[:, 0].tolist() == [0.0, 4.0, 2.0, 6.0]  # rows r0, r2, r1, r3


def test_bad_source_folder(tmp_path):
    with pytest.raises(ImportError_, match="exactly one checkpoint"):
        import_llama2c(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@needs_assets()
def test_stories260k_imports_and_matches_reference_outputs(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = import_llama2c(ASSETS / "stories260K", tmp_path / "hf")
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    ids = tok("Once upon a time", return_tensors="pt").input_ids
    assert ids[0, 0].item() == 1  # BOS, as llama2.c adds it
    text = tok.decode(model.generate(ids, max_new_tokens=32, do_sample=False)[0], skip_special_tokens=True)
    assert text.startswith("Once upon a time, there was a little girl named Lily. "
                           "She loved to play outside in the park.")
    # Held-out TinyStories loss of the original model: about 1.27–1.43 nats/token (assets README).
    stories = (ASSETS / "text/tinystories/tinystories_val.txt").read_text().split("\n\n")[:40]
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in stories:
            x = tok(s, return_tensors="pt").input_ids[:, :256]
            nll += model(input_ids=x, labels=x).loss.item() * (x.shape[1] - 1)
            n += x.shape[1] - 1
    assert 1.2 < nll / n < 1.5, nll / n
    assert math.isfinite(nll)


@needs_assets()
def test_import_refuses_a_folder_it_did_not_write_and_replaces_its_own(tmp_path):
    # The output folder is replaced whole: a folder holding a user's thesis.txt was deleted, exit 0.
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(ImportError_, match="not an earlier hyperfit import"):
        import_llama2c(ASSETS / "stories260K", precious)
    assert (precious / "thesis.txt").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing half-written beside it
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ImportError_, match="is a file"):
        import_llama2c(ASSETS / "stories260K", tmp_path / "afile")
    out = import_llama2c(ASSETS / "stories260K", tmp_path / "hf")
    (out / "stale.txt").write_text("left by an older import")
    import_llama2c(ASSETS / "stories260K", out)  # an earlier import is replaced
    assert (out / "config.json").is_file() and not (out / "stale.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (import_llama2c(ASSETS / "stories260K", empty) / "config.json").is_file()
