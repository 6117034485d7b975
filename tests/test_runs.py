"""The run directory's atomic writes: all or nothing, and readable like any other file."""

import os
import stat

import pytest

from hyperfit.runs import atomic_dir, atomic_path


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_writes_get_the_mode_plain_writes_get(tmp_path, umask_022):
    # mkstemp/mkdtemp make private temp files; renamed into place as they were, checkpoints/final/ was
    # unreadable to everyone else on a shared machine.
    with atomic_path(tmp_path / "metrics.json") as tmp:
        tmp.write_text("{}")
    with atomic_dir(tmp_path / "final") as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
    with atomic_dir(tmp_path / "final") as tmp:  # replacing an existing folder too
        (tmp / "model.safetensors").write_bytes(b"y")
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "final").stat().st_mode) == 0o755
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == b"y"


def test_a_failed_write_leaves_the_old_content_and_no_temp_files(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "model.safetensors").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "final") as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "log.jsonl") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_files_libraries_write_privately_inside_an_atomic_dir_become_readable(tmp_path, umask_022):
    # transformers' save_pretrained writes model.safetensors through a private temp file (0600): other users
    # of a shared machine could not load the weights although config.json beside them was 0644.
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    with atomic_dir(tmp_path / "final") as tmp:
        model.save_pretrained(tmp)
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "x.bin").write_bytes(b"x")
        os.chmod(tmp / "sub" / "x.bin", 0o600)
    modes = {p.relative_to(tmp_path / "final").as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in (tmp_path / "final").rglob("*")}
    assert modes["model.safetensors"] == 0o644 and modes["config.json"] == 0o644
    assert modes["sub"] == 0o755 and modes["sub/x.bin"] == 0o644


def test_a_full_disk_or_a_read_only_folder_is_one_error_naming_the_file_and_the_fix(tmp_path, monkeypatch):
    # A full disk mid-checkpoint printed torch's "unexpected pos 558464 vs 558356"; a read-only output folder
    # printed an OSError traceback.
    import errno
    import shutil
    import tempfile

    import hyperfit.runs as runs
    from hyperfit.runs import RunError, write_text

    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "model.safetensors").write_bytes(b"complete")
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100 * 2**30, 100 * 2**30, 2**20))
    with pytest.raises(RunError, match=r"only 1 MiB free.*--resume"):
        with atomic_dir(tmp_path / "final") as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 558464 vs 558356")
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == b"complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    with pytest.raises(RunError, match="no space left"):
        with atomic_path(tmp_path / "log.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100 * 2**30, 0, 50 * 2**30))
    with pytest.raises(RuntimeError, match="a bug") as plain:  # with space left, other errors stay what they are
        with atomic_path(tmp_path / "x.json"):
            raise RuntimeError("a bug")
    assert not isinstance(plain.value, RunError)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(RunError, match=r"cannot write .*config\.yaml: the file system is read-only; choose an output"):
        write_text(tmp_path / "run" / "config.yaml", "x")
