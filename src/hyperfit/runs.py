"""The run directory: the contract between stages (see docs/DESIGN.md, run-directory format 1).

    runs/<name>/
      config.yaml                     resolved config + provenance (versions, git commit, command line)
      data/{train,val,contexts}.jsonl data/vocabulary.txt
      train_log.jsonl                 one row per logged step and per probe
      checkpoints/epoch-NNNN/         HF model + training_state.pt (exact resume)
      checkpoints/step-NNNNNNN/       the same, under a train.updates budget (saved every N updates)
      checkpoints/final/              what users load with transformers
      generations/<tag>.jsonl         metrics/<tag>.json      report.md, plots/*.png

Every write goes through a temp file (or temp directory) and a rename, so a crash never leaves a
half-written artifact that a later stage would trust.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from hyperfit.config import from_dict, read_config_file, replace, to_dict
from hyperfit.dist import world
from hyperfit.errors import RunError  # noqa: F401 - raised here, importable from here


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, run: RunDir | str | Path) -> RunDir:
        """A RunDir from a RunDir or a path: the stage functions take either (notebooks pass paths)."""
        return run if isinstance(run, cls) else cls(run)

    # Paths ------------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def train_log(self) -> Path:
        return self.path / "train_log.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def final(self) -> Path:
        return self.checkpoints / "final"

    @property
    def generations(self) -> Path:
        return self.path / "generations"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    def data_file(self, split: str) -> Path:
        return self.data / f"{split}.jsonl"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:04d}"

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:07d}"

    def generation_file(self, tag: str) -> Path:
        return self.generations / f"{tag}.jsonl"

    def metrics_file(self, tag: str) -> Path:
        return self.metrics / f"{tag}.json"

    # Queries ----------------------------------------------------------------------------------------------
    def epoch_checkpoints(self) -> list[Path]:
        """Complete resumable checkpoints, oldest first (temp directories of interrupted writes excluded):
        epoch-NNNN/, then step-NNNNNNN/ (train.updates), so a run resumed under an update budget continues
        after its epoch checkpoints."""
        if not self.checkpoints.is_dir():
            return []
        found = [*self.checkpoints.glob("epoch-[0-9][0-9][0-9][0-9]"), *self.checkpoints.glob("step-" + "[0-9]" * 7)]
        return sorted((p for p in found if (p / "training_state.pt").is_file()),
                      key=lambda p: (p.name.startswith("step-"), p.name))

    def weights_for(self, checkpoint: str) -> Path | None:
        """The folder of the weights named by generate.checkpoint (final or epoch-NNNN); None for base, the
        untrained model.name that the run's model config names (a hub id or a path). Load either with
        `hyperfit.models.load_for_inference(model_cfg, run.weights_for(checkpoint))`."""
        if checkpoint == "base":
            return None
        path = self.final if checkpoint == "final" else self.checkpoints / checkpoint
        if not path.is_dir():
            have = ["base", *(p.name for p in self.epoch_checkpoints()), *(["final"] if self.final.is_dir() else [])]
            raise RunError(f"generate.checkpoint={checkpoint!r}: {path} does not exist (train first); available: "
                           f"{', '.join(have)}")
        return path

    def sweep_interrupted_writes(self) -> list[Path]:
        """Temp files of writes a kill cut short, in every folder a stage writes (see sweep_interrupted_writes).
        One process must call it, while no stage is writing."""
        return [p for folder in (self.path, self.data, self.checkpoints, self.generations, self.metrics, self.plots)
                for p in sweep_interrupted_writes(folder)]

    def require(self, path: Path, made_by: str) -> Path:
        if not path.exists():
            raise RunError(f"{path} does not exist; it is written by `{made_by}` (run that stage first)")
        return path

    def read_samples(self, split: str) -> list[dict]:
        return read_jsonl(self.require(self.data_file(split), "hyperfit run ... (data stage)"))


# Atomic writes --------------------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _as_if_created(tmp: str | Path, directory: bool) -> None:
    """Give a temp file/dir the mode a plain open()/mkdir() would have: mkstemp and mkdtemp make them
    private (0600/0700), and other users of a shared machine could not read them."""
    os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())


def _as_if_created_tree(root: Path) -> None:
    """`_as_if_created` for a folder and everything in it: libraries write through private temp files too
    (transformers' save_pretrained leaves model.safetensors 0600), so the files need it as much as the folder."""
    for parent, dirs, files in os.walk(root):
        for name in dirs:
            _as_if_created(os.path.join(parent, name), directory=True)
        for name in files:
            path = os.path.join(parent, name)
            executable = os.stat(path).st_mode & 0o100
            os.chmod(path, ((0o777 if executable else 0o666) & ~_umask()))
    _as_if_created(root, directory=True)


UNWRITABLE = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied"}
FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded"}
LOW_SPACE = 64 * 2**20  # below this much free space, a failed write is taken to be a full disk


def write_failure(path: Path, error: BaseException) -> RunError | None:
    """A RunError naming `path` and the fix, when `error` is the disk's or the folder's fault, else None.

    Libraries report a full disk in their own words (torch.save: "unexpected pos 558464 vs 558356"), so a
    failure with little space left counts as one too."""
    code = getattr(error, "errno", None)
    if code in UNWRITABLE:
        return RunError(f"cannot write {path}: {UNWRITABLE[code]}; choose an output folder you can write to "
                        "(out_dir=... or --out DIR). Nothing there was replaced")
    try:
        free = shutil.disk_usage(_existing_parent(path)).free
    except OSError:
        free = None
    if code in FULL or (free is not None and free < LOW_SPACE and isinstance(error, (OSError, RuntimeError))):
        what = FULL.get(code, f"only {free / 2**20:.0f} MiB free")
        return RunError(f"cannot write {path}: {what} ({str(error)[:120]}). Free some space (old checkpoints: "
                        "train.keep_checkpoints) and rerun with --resume; the previous complete files are intact")
    return None


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@contextmanager
def _explained(path: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, RuntimeError) as e:
        explained = write_failure(path, e)
        if explained is None:
            raise
        raise explained from e


FAULT_ENV = "HYPERFIT_FAULT_AT"
_writes_seen: dict[str, int] = {}


def fault_point(path: Path, when: str) -> None:
    """The crash tests' kill switch: HYPERFIT_FAULT_AT=NAME[:N[:WHEN]] kills this process (SIGKILL: no
    cleanup runs, as in a power cut or the OOM killer) at the N-th write of a file or folder named NAME,
    WHEN "before" its rename or append (default), "after" it, or "between" the two renames that replace a
    folder. Unset, it costs one environment lookup."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, n, moment = fault_spec(spec)
    if Path(path).name != name or moment != when:
        return
    key = f"{name}:{when}"
    _writes_seen[key] = _writes_seen.get(key, 0) + 1
    if _writes_seen[key] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


def fault_spec(spec: str) -> tuple[str, str, str]:
    """
    >>> fault_spec("final"), fault_spec("train_log.jsonl:3"), fault_spec("final:1:after")
    (('final', '1', 'before'), ('train_log.jsonl', '3', 'before'), ('final', '1', 'after'))
    """
    name, n, moment = (spec.split(":", 2) + ["", ""])[:3]
    return name, n or "1", moment or "before"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    with _explained(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            yield Path(tmp)
            _as_if_created(tmp, directory=False)
            fault_point(path, "before")
            os.replace(tmp, path)
            fault_point(path, "after")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temp directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    with _explained(path):
        with _atomic_dir(path) as tmp:
            yield tmp


@contextmanager
def _atomic_dir(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        _as_if_created_tree(tmp)
        fault_point(path, "before")
        if path.exists():
            # Two renames keep a complete copy on disk at every moment.
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            fault_point(path, "between")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fault_point(path, "after")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


LEFTOVER_SUFFIXES = (".tmp", ".old", ".pruned", ".sharded")


def sweep_interrupted_writes(folder: Path) -> list[Path]:
    """Undo what atomic writes into `folder` left when a kill cut them short (their cleanup never ran):
    hidden `.NAME.*.tmp` files and folders, checkpoints being pruned (`.NAME.pruned`) and sharded staging
    (`.NAME.sharded`) are removed; a `.NAME.old` folder is the previous complete copy, put back when the
    kill fell between the two renames (NAME missing), else removed. Complete files are
    never touched. Call it where one process writes the folder, before the stage writes there again."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    left = [p for p in folder.glob(".*") if p.name.endswith(LEFTOVER_SUFFIXES)]
    for p in left:
        original = folder / p.name[1 : -len(".old")] if p.name.endswith(".old") else None
        if original is not None and not original.exists():
            os.replace(p, original)
        elif p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return left


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_sha256(obj) -> str:
    """sha256 of a JSON value with sorted keys: a content key (values JSON cannot hold count as their str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB blocks (weight files can be larger than memory allows):
    what a metrics file records of the generations it measured, and what a weights hash is made of."""

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def append_jsonl(path: Path, row: dict) -> None:
    # Appends are line-sized; a torn last line from a crash is dropped by read_jsonl(tolerate_tail=True).
    fault_point(path, "before")
    with _explained(Path(path)), open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    fault_point(path, "after")


def read_jsonl(path: Path, tolerate_tail: bool = False) -> list[dict]:
    rows = []
    with open(path) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if tolerate_tail and i == len(lines) - 1:
                break
            raise RunError(f"{path}:{i + 1} is not valid JSON; the file is damaged — "
                           "rerun the stage that writes it") from e
    return rows


# Provenance -----------------------------------------------------------------------------------------------


def provenance() -> dict:
    """Versions, git commit, host and command line: enough to say what produced an artifact."""
    versions = {"python": platform.python_version()}
    for mod in ("hyperfit", "torch", "transformers", "accelerate", "tokenizers"):
        try:
            versions[mod] = str(__import__(mod).__version__)
        except Exception:  # noqa: BLE001 - a missing optional package is simply not recorded
            pass
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "git_commit": _git_commit(),
        "host": platform.node(),
        "versions": versions,
    }


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def save_config(run: RunDir, cfg) -> None:

    doc = to_dict(cfg)
    doc["provenance"] = provenance()
    write_text(run.config, yaml.safe_dump(doc, sort_keys=False))


def record_stage_overrides(run: RunDir, overrides) -> None:
    """Note in config.yaml's provenance that a stage ran with overrides (`hyperfit train RUN train.epochs=6`).

    The config itself stays as the run was created, because later stages read their defaults from it;
    the note is what tells a reader that, say, the run was trained for 6 epochs and not the saved 2.
    Rank 0 writes it under a launch."""

    if not overrides or world()[0] != 0:
        return
    doc = yaml.safe_load(run.require(run.config, "hyperfit run").read_text()) or {}
    stages = doc.setdefault("provenance", {}).setdefault("stages", [])
    stages.append({"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "command": " ".join(sys.argv), "overrides": list(overrides)})
    write_text(run.config, yaml.safe_dump(doc, sort_keys=False))


def load_run_config(run: RunDir, overrides=()):
    """The config saved in a run directory, with overrides applied (provenance is not a config key)."""

    raw = read_config_file(run.require(run.config, "hyperfit run"))
    raw.pop("provenance", None)
    return replace(from_dict(raw), overrides)
