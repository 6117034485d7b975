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
