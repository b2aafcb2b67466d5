"""Render benchmark JSON into markdown tables and PNG plots, and refresh the README's table."""
from __future__ import annotations

import json
import re
from pathlib import Path

README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(result: dict) -> str:
    """One table per input size: speed and quality side by side."""
    m = result["machine"]
    q = result["settings"].get("quality")
    lines = [f"Measured {m['date'][:10]} on {m['cpu']} ({m['cores']} cores"
             + (f", GPU {m['gpu']['name']}" if m.get("gpu") else "") + f"), batch {result['settings']['batch']}, "
             f"{result['settings']['threads']} thread(s); medians of >= 3 runs and >= "
             f"{result['settings']['min_seconds']:g} s after warm-up."]
    if q:
        lines.append(f"Quality: {q['protocol']} (first {q['limit']} images); '-' = not measured "
                     f"(untrained baseline weights).")
    sizes = list(dict.fromkeys(r["size"] for r in result["rows"]))
    for size in sizes:
        lines += ["", f"**{size}**", "",
                  "| artifact | backend | precision | p50 ms | p99 ms | fps | peak RSS MB (+run) | GMAC | PSNR dB | SSIM |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in result["rows"] if r["size"] == size):
            if r.get("skipped"):
                lines.append(f"| {r['artifact']} | {r['backend']} | {r['precision']} | skipped: {r['skipped']} "
                             f"| | | | | | |")
                continue
            lines.append(f"| {r['artifact']} | {r['backend']} | {r['precision']} | {_fmt(r['p50_ms'])} | "
                         f"{_fmt(r['p99_ms'])} | {_fmt(r['fps'], 2)} | {_fmt(r['peak_rss_mb'], 0)} "
                         f"(+{_fmt(r.get('peak_rss_delta_mb'), 0)}) | "
                         f"{_fmt(r['gmac_per_frame'], 2)} | {_fmt(r['psnr_db'], 2)} | {_fmt(r['ssim'], 3)} |")
    protocols = (q or {}).get("camera_protocols") or []
    if protocols:
        lines += ["", f"**Camera protocols** (PSNR dB on the same {q['limit']} images through each camera preset; "
                  "input = the degraded frame; NLM strength tuned per preset on val; gray frames of a bundled "
                  "model with a gray specialist run on it, as in the SDK)", "",
                  "| artifact | backend | precision | " + " | ".join(f"{p} (input)" for p in protocols) + " |",
                  "|---|---|---|" + "---:|" * len(protocols)]
        seen = set()
        for r in result["rows"]:
            key = (r["artifact"], r["backend"], r["precision"])
            if not r.get("camera") or key in seen:
                continue
            seen.add(key)
            cells = [f"{_fmt(r['camera'][p]['psnr_db'], 2)} ({_fmt(r['camera'][p]['input_psnr_db'], 2)})"
                     for p in protocols]
            lines.append(f"| {r['artifact']} | {r['backend']} | {r['precision']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(result: dict, out_dir: Path, stem: str) -> list[Path]:
    """Latency vs resolution per runner (log-log) and PSNR vs latency with the Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if not r.get("skipped")]
    key = lambda r: f"{r['artifact']} ({r['backend']}, {r['precision']})"  # noqa: E731
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(map(key, rows)):
        pts = sorted((r["pixels"], r["p50_ms"]) for r in rows if key(r) == name)
        ax.plot([p / 1e6 for p, _ in pts], [t for _, t in pts], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="megapixels per frame", ylabel="p50 latency (ms)",
           title=f"Latency vs resolution — {result['machine']['cpu'][:40]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, out_dir / f"{stem}_latency.png"))

    sizes = list(dict.fromkeys(r["size"] for r in rows))
    ref = "640x360" if "640x360" in sizes else sizes[0]
    pts = [(r["p50_ms"], r["psnr_db"], key(r)) for r in rows if r["size"] == ref and r["psnr_db"] is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(10, 4.5))
        markers = "osD^v<>"
        for i, (t, p, name) in enumerate(pts):  # a legend entry per point: labels beside points overlap
            ax.scatter(t, p, s=40, marker=markers[i // 10 % len(markers)], label=name)
        front, best = [], -1e9
        for t, p, _ in sorted(pts):
            if p > best + 1e-3:  # a real gain, not float noise between backends
                front.append((t, p))
                best = p
        ax.plot(*zip(*front), "k--", lw=1, label="Pareto front")
        ax.set(xscale="log", xlabel=f"p50 latency at {ref} (ms)", ylabel="PSNR (dB)", title="Quality vs speed")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        written.append(_save(fig, out_dir / f"{stem}_pareto.png"))
    return written


def render(json_path: str | Path, readme: str | Path | None = None) -> list[Path]:
    """Write ``<stem>.md`` and the PNG plots next to ``json_path``; with ``readme``, replace the text
    between the bench markers in it by the table and links to the plots."""
    json_path = Path(json_path)
    result = json.loads(json_path.read_text())
    table = markdown(result)
    md = json_path.with_suffix(".md")
    md.write_text(table)
    written = [md, *plots(result, json_path.parent, json_path.stem)]
    if readme:
        readme = Path(readme)
        text = readme.read_text()
        if README_START not in text or README_END not in text:
            raise ValueError(f"{readme} lacks the {README_START} / {README_END} markers")
        rel = lambda p: p.resolve().relative_to(readme.resolve().parent).as_posix()  # noqa: E731
        images = "\n".join(f"![{p.stem}]({rel(p)})" for p in written[1:])
        block = f"{README_START}\n{table}\n{images}\n{README_END}"
        readme.write_text(re.sub(re.escape(README_START) + ".*?" + re.escape(README_END),
                                 lambda _: block, text, flags=re.S))
        written.append(readme)
    return written
