"""The figure of ``bench_scale.py``'s figures: time and peak memory against rows.

Run by hand:  python bench/plot_scale.py scale.json [--out bench/scale.png]

Reads the JSON that ``bench_scale.py --out`` writes and draws, on log–log axes, the
warm-cache whole-process time, its CPU time (all threads: fairer than wall time on a
busy machine) and the peak RSS against the number of rows, with a line of slope 1
through the largest size: points on or below it grow linearly (or slower) in rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402


def draw(results: list[dict], out: Path, run: str = "warm") -> None:
    """Two panels (seconds, GB) against rows, for the processes of ``run``."""
    rows = sorted((r for r in results if r["run"] == run), key=lambda r: r["rows"])
    n = [r["rows"] for r in rows]
    fig, (time_ax, mem_ax) = plt.subplots(1, 2, figsize=(8, 3.4), layout="constrained")
    series = [(time_ax, "process_s", "whole process (wall)", "o-"), (time_ax, "cpu_s", "CPU, all threads", "s--"),
              (mem_ax, "peak_rss_gb", "peak RSS", "o-")]
    for ax, key, label, style in series:
        ax.plot(n, [r[key] for r in rows], style, label=label, color="0.15" if style == "o-" else "0.45")
    for ax, key, unit in [(time_ax, "process_s", "seconds"), (mem_ax, "peak_rss_gb", "GB")]:
        top = rows[-1][key]
        ax.plot(n, [top * k / n[-1] for k in n], ":", color="0.6", label="linear in rows")
        ax.set(xscale="log", yscale="log", xlabel="rows (groups of 100)", ylabel=unit)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.legend(frameon=False, fontsize=8)
    time_ax.set_title(f"ML fit with SEs, {run} cache", fontsize=10)
    mem_ax.set_title("peak memory of the process", fontsize=10)
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "scale.png")
    args = parser.parse_args()
    draw(json.loads(args.results.read_text()), args.out)


if __name__ == "__main__":
    main()
