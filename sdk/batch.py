"""Restore image and video files and folders of them: what ``mirnet restore`` runs.

:func:`plan_restore` maps the inputs to outputs (names and sub-folders kept) and finds the problems
before anything runs; :func:`restore_file` restores one job: an image through the Restorer, a video
through the stream pipeline with the ``block`` policy (:func:`mirnet.sdk.stream.restore.restore_video`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .media import kind_of, read_image, write_image

__all__ = ["RestoreJob", "plan_restore", "restore_file"]


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


def restore_file(restorer, job: RestoreJob, *, progress: Callable[[int, int | None], object] | None = None) -> None:
    """Restore one job with an opened Restorer (left open); ``progress(done, total)`` follows the
    frames of a video. The output folder is created; the output appears only when complete."""
    job.dst.parent.mkdir(parents=True, exist_ok=True)
    if job.kind == "image":
        write_image(job.dst, restorer.restore(read_image(job.src)))
    else:
        from .stream.restore import restore_video

        restore_video(restorer, job.src, job.dst, progress=progress)
