"""Benchmark: a 300x512x512 CT case (4 raters, 3 classes) end to end, within memory.

Run ``python benchmarks/bench_ct_scale.py --part NAME`` (``--shape Z Y X`` for a smaller try). Each part
lives in its own module beside this one and runs its measurements in fresh subprocesses, reporting
medians of several runs and each subprocess's peak resident memory (``ru_maxrss``):

raters    load + summary + entropy map + mSVLS + STAPLE (pattern EM), STAPLE against SimpleITK's filter
          on the same input. Targets: <= 10 s in all, STAPLE >= 20x faster than SimpleITK, peak RSS <= 3 GB.
ssn       SSN (rank 10) on the full case with the default 2-D SSN: first view of a plane, a cached plane,
          browsing 50 planes and moving the sliders; "new sample" redraw of a 512^2 slice.
          Targets: first view <= 1 s, cached <= 16 ms, redraw <= 33 ms, peak RSS <= 4 GB.
predict   predict with the default 3-D U-Net. Target: peak RSS <= 2 GB beyond the input image.
tace      TACE on 35 M voxels x 4 classes against the sort-based computation. Target: <= 1 s.
widgets   the widgets on the case in a real viewer: longest event-loop stall (target <= 100 ms), peak RSS.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

PARTS = ("raters", "ssn", "predict", "tace", "widgets")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], help="Z Y X of the generated case")
    parser.add_argument("--repeats", type=int, default=3)
    args, rest = parser.parse_known_args()
    sys.path.insert(0, str(Path(__file__).parent))
    for part in PARTS if args.part == "all" else (args.part,):
        module = importlib.import_module(f"ct_scale_{part}")
        print(f"== {part}", flush=True)
        module.run(args, rest)


if __name__ == "__main__":
    main()
