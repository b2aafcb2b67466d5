"""Restore image and video files and folders of them: what ``mirnet restore`` runs.

:func:`plan_restore` maps the inputs to outputs (names and sub-folders kept) and finds the problems
before anything runs; :func:`output_folder` creates the output folder or says why it cannot;
:func:`restore_file` restores one job: an image through the Restorer, a video through the stream
pipeline with the ``block`` policy (:func:`mirnet.sdk.stream.restore.restore_video`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .media import kind_of, read_image, write_image

__all__ = ["RestoreJob", "output_folder", "plan_restore", "restore_file"]


@dataclass(frozen=True)
class RestoreJob:
    src: Path
    dst: Path
    kind: str


def plan_restore(inputs: list[str], outdir: Path, *, force: bool) -> tuple[list[RestoreJob], list[str]]:
    """Map inputs (files and folders, searched recursively) to outputs under ``outdir`` keeping
    names (and sub-folders of folder inputs). Returns the jobs and the problems found."""
    jobs: list[RestoreJob] = []
    problems: list[str] = []
    for raw in inputs:
        src = Path(raw)
        if src.is_dir():
            found = sorted(p for p in src.rglob("*") if p.is_file() and kind_of(p) and not p.name.startswith("."))
            if not found:
                problems.append(f"{src}: folder holds no image or video files")
            jobs += [RestoreJob(p, outdir / p.relative_to(src), kind_of(p)) for p in found]
        elif src.is_file():
            if kind_of(src) is None:
                problems.append(f"{src}: unsupported file type {src.suffix!r}")
            else:
                jobs.append(RestoreJob(src, outdir / src.name, kind_of(src)))
        else:
            problems.append(f"{src}: no such file or folder")
    inputs_resolved = {j.src.resolve() for j in jobs}
    seen: dict[Path, Path] = {}
    kept = []
    for job in jobs:
        dst = job.dst.resolve()
        if dst in inputs_resolved:
            problems.append(f"{job.src}: output {job.dst} would overwrite an input; choose another -o")
        elif dst in seen:
            problems.append(f"{job.src}: output {job.dst} is also the output of {seen[dst]}; restore them separately")
        elif job.dst.exists() and not force:
            problems.append(f"{job.src}: output {job.dst} exists; pass --force to overwrite it")
        else:
            seen[dst] = job.src
            kept.append(job)
    return kept, problems


def output_folder(folder: str | Path) -> Path:
    """``folder`` as a Path, created with its parents if missing. InputError naming the problem and
    the fix when it is a file, lies under a file or cannot be created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output folder {folder} is a file, not a folder; choose a folder (it is "
                         f"created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
        why = f": {blocker} is a file" if blocker else f" ({exc.strerror})"
        raise InputError(f"cannot create the output folder {folder}{why}; choose another folder") from exc
    except OSError as exc:
        raise InputError(f"cannot create the output folder {folder} ({exc.strerror or exc}); choose a "
                         f"folder you can write to") from exc
    return folder


def restore_file(restorer, job: RestoreJob, *,
                 progress: Callable[[int, int | None], object] | None = None) -> str | None:
    """Restore one job with an opened Restorer (left open); ``progress(done, total)`` follows the
    frames of a video. The output folder is created; the output appears only when complete.

    Returns a warning when the output was written but holds less than the input claims (a video
    that ends before the frame count its container declares: truncated or corrupt), else None.
    Raises InputError when the input cannot be used (nothing written) and OutputError when the
    output cannot be written (nothing partial left behind)."""
    output_folder(job.dst.parent)
    if job.kind == "image":
        write_image(job.dst, restorer.restore(read_image(job.src)))
        return None
    from .stream.restore import restore_video

    stats = restore_video(restorer, job.src, job.dst, progress=progress)
    declared, written = stats["declared_frames"], stats["frames"]
    if declared is not None and written < declared:
        return (f"{job.src}: decoded {written} of the {declared} frames its container declares "
                f"(truncated or corrupt?); wrote those {written}")
    return None
