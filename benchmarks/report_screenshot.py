"""Render a finished project's report and check it in a real headless browser.

Usage: python benchmarks/report_screenshot.py PROJECT_DIR [--out benchmarks/results/report_screenshot.png]

PROJECT_DIR is the -o directory of ``mlff-distill run`` (e.g. ``mlff-distill run tiny -o /tmp/rep_tiny``).
Writes PROJECT_DIR/report/report.html (the project report: verdict, training, held-out accuracy,
speed, MD, dataset quality) and a Chromium screenshot of its top 1200 x 4000 pixels; prints the
render time, the HTML size and the share of non-white pixels (a blank page would be ~0 %).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib.image as mpimg

from mlff_distiller.quality.project_report import screenshot, write_project_report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "report_screenshot.png"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    html = write_project_report(args.project)
    t1 = time.perf_counter()
    png = screenshot(html, args.out, width=1200, height=4000)
    t2 = time.perf_counter()
    img = mpimg.imread(png)[..., :3]
    ink = float((img < 0.95).any(axis=-1).mean())
    print(f"report {html} ({html.stat().st_size / 1e6:.2f} MB) rendered in {t1 - t0:.1f} s")
    print(f"screenshot {png} ({img.shape[1]}x{img.shape[0]}) in {t2 - t1:.1f} s; non-white pixels {100 * ink:.1f} %")
    return 0 if ink > 0.02 else 1


if __name__ == "__main__":
    raise SystemExit(main())
