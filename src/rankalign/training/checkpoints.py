"""Checkpoints that survive a kill at any moment.

``transformers.Trainer`` writes ``checkpoint-N`` in place, file after file, and deletes old
checkpoints with ``rmtree``; a process killed meanwhile leaves a ``checkpoint-N`` folder
without its files, which a resume then trips over. Here a checkpoint is written into a
staging folder (``<output_dir>/.partial-checkpoints/checkpoint-N``), flushed to disk and
renamed into place only when every file is there, so a folder named ``checkpoint-N`` is
always complete; an old checkpoint is renamed away before it is deleted. Leftovers of an
interrupted save are removed at the next start with a one-line notice.

``resume_from_checkpoint: latest`` (or ``true``) picks the newest complete checkpoint of
the output folder and starts from scratch when there is none yet, so rerunning the same
command after a kill always goes on from the last complete checkpoint.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from rankalign.errors import UserError
from rankalign.outputs import fsync_path

STAGING = ".partial-checkpoints"
TRASH = ".deleting-"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
#: a checkpoint holds the trainer state and the weights (full, sharded, or an adapter)
_STATE = "trainer_state.json"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin",
            "pytorch_model.bin.index.json")
LATEST = ("latest", "true")


def is_complete(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a whole checkpoint (trainer state and weights)."""
    folder = Path(folder)
    if not (folder / _STATE).is_file():  # the Trainer writes its state last
        return False
    if any((folder / name).is_file() for name in _WEIGHTS):
        return True
    return any(p.name.startswith("global_step") and p.is_dir() for p in folder.iterdir())  # DeepSpeed


def checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """The ``checkpoint-N`` folders of ``output_dir``, oldest (smallest N) first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def newest_complete(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint of ``output_dir``, or ``None``."""
    complete = [p for p in checkpoints(output_dir) if is_complete(p)]
    return complete[-1] if complete else None


def resolve_resume(value: str | bool | None, output_dir: str | os.PathLike[str]) -> str | None:
    """The checkpoint folder to resume from, or ``None`` to start from scratch.

    Args:
        value: ``None``/``False`` (no resume), ``True``/``"true"``/``"latest"`` (the newest
            complete checkpoint of ``output_dir``, none yet: from scratch), or a folder.
    Raises:
        UserError: a named folder that is missing or not a complete checkpoint (the message
            names the newest complete one to use instead).
    """
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false")):
        return None
    if value is True or str(value).strip().lower() in LATEST:
        found = newest_complete(output_dir)
        if found is None:
            print(f"resume_from_checkpoint: no complete checkpoint in {output_dir} yet; starting from scratch",
                  flush=True)
            return None
        return str(found)
    folder = Path(str(value))
    if folder.is_dir() and is_complete(folder):
        return str(folder)
    newest = newest_complete(folder.parent if _CHECKPOINT.match(folder.name) else output_dir)
    what = "does not exist" if not folder.exists() else "is not a complete checkpoint (an interrupted save)"
    fix = (f"resume from {newest} instead, or pass --resume_from_checkpoint latest" if newest
           else "no complete checkpoint exists there; start without --resume_from_checkpoint")
    raise UserError(f"resume_from_checkpoint: {folder} {what}; {fix}")


def clean_leftovers(output_dir: str | os.PathLike[str]) -> list[str]:
    """Remove what an interrupted save left in ``output_dir``; returns the removed names.

    That is the staging folder, checkpoints renamed for deletion, and (written by a
    transformers version or tool that saves in place) ``checkpoint-N`` folders that are
    not complete. A one-line notice names them.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return []
    gone = [p for p in root.iterdir() if p.name == STAGING or p.name.startswith(TRASH)]
    gone += [p for p in checkpoints(root) if not is_complete(p)]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    names = sorted(p.name for p in gone)
    if names:
        print(f"removed the leftovers of an interrupted save in {root}: {', '.join(names)}", flush=True)
    return names


def fsync_tree(folder: str | os.PathLike[str]) -> None:
    """Flush every file under ``folder``, then the folder itself, to disk."""
    for dirpath, _, files in os.walk(folder):
        for name in files:
            fsync_path(os.path.join(dirpath, name))
    _fsync_dir(folder)


def _fsync_dir(folder: str | os.PathLike[str]) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder; the files are synced
        pass
    finally:
        os.close(fd)


def publish(staged: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Move the finished folder ``staged`` to ``final`` in one rename (an existing ``final``,
    a checkpoint of the same step saved again, is renamed away and deleted first)."""
    staged, final = Path(staged), Path(final)
    fsync_tree(staged)
    if final.exists():
        remove(final)
    os.rename(staged, final)
    _fsync_dir(final.parent)


def remove(folder: str | os.PathLike[str]) -> None:
    """Delete a checkpoint so that no incomplete ``checkpoint-N`` is ever visible: rename, then delete."""
    folder = Path(folder)
    doomed = folder.with_name(f"{TRASH}{folder.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.rename(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def rotate(output_dir: str | os.PathLike[str], save_total_limit: int | None, best: str | None) -> None:
    """Keep at most ``save_total_limit`` checkpoints, the newest and ``best`` always (as
    ``transformers.trainer_utils.rotate_checkpoints``, deleting with :func:`remove`)."""
    if not save_total_limit or save_total_limit <= 0:
        return
    found = checkpoints(output_dir)
    protected = {str(found[-1])} if found else set()
    if best:
        protected.add(str(Path(best)))
    keep = max(save_total_limit, len(protected))
    excess = len(found) - keep
    for folder in found:
        if excess <= 0:
            break
        if str(folder) not in protected:
            remove(folder)
            excess -= 1
