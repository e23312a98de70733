"""Speed of the Self-Instruct novelty filter on real task inputs (no model).

    python benchmarks/bench_novelty.py --inputs 3000 --threshold 0.7

Feeds the test and validation inputs of eight bundled tasks, shuffled, through
one `NoveltyIndex` as synthesis would (a kept input joins the index) and prints
how many were dropped and the time per input.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("task1195", "task738", "task937", "task199", "task036", "task039", "task121", "task190")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inputs", type=int, default=3000)
    parser.add_argument("--threshold", type=float, default=0.7)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from datasets.utils.logging import disable_progress_bar

    from selfguide_hf.bundled import load_eval_split
    from selfguide_hf.filters import NoveltyIndex

    disable_progress_bar()
    texts = [
        text
        for task in TASKS
        for split in ("test", "validation")
        for text in load_eval_split(task, split)["input"]
    ]
    random.Random(0).shuffle(texts)
    texts = texts[: args.inputs]
    index = NoveltyIndex()
    dropped = 0
    started = time.perf_counter()
    for text in texts:
        if index.exceeds(text, args.threshold):
            dropped += 1
        else:
            index.add(text)
    seconds = time.perf_counter() - started
    print(
        f"{len(texts)} inputs, threshold {args.threshold}: {dropped} dropped, {seconds:.1f} s "
        f"({1000 * seconds / len(texts):.2f} ms per input)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
