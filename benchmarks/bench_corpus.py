"""Can a user's corpus be large? Time and memory of reading and ranking one (no model).

    python benchmarks/bench_corpus.py --rows 200000 --task task199
    python benchmarks/bench_corpus.py --rows 20000 --retriever embeddings

Writes a JSONL corpus of ``--rows`` rows drawn from the test and validation
inputs of every bundled task (each row made unique with its number, so the
deduplication keeps them all), then times, in a fresh process, what synthesis
does with a corpus before the model runs: `load_corpus` (read, deduplicate),
`rank_corpus` (BM25 index and score, or sentence embeddings, against the
task's query) and
`corpus_fingerprint`, and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def write_corpus(path: Path, rows: int, seed: int = 0) -> None:
    sys.path.insert(0, str(ROOT))
    from datasets.utils.logging import disable_progress_bar

    from selfguide_hf.bundled import bundled_task_names, load_eval_split

    disable_progress_bar()
    pool = [
        text
        for task in bundled_task_names()
        for split in ("test", "validation")
        for text in load_eval_split(task, split)["input"]
    ]
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(rows):
            out.write(json.dumps({"text": f"{rng.choice(pool)} (#{i})"}) + "\n")


def measure(path: Path, task: str, retriever: str) -> dict[str, Any]:
    """Runs in a fresh process so that the peak memory is the corpus's alone."""
    sys.path.insert(0, str(ROOT))
    from selfguide_hf.corpus import corpus_fingerprint, load_corpus, rank_corpus
    from selfguide_hf.task import TaskSpec

    spec = TaskSpec.load(task)
    start = time.perf_counter()
    texts = load_corpus(path)
    loaded = time.perf_counter()
    rank_corpus(texts, spec, retriever)
    ranked = time.perf_counter()
    corpus_fingerprint(path)
    hashed = time.perf_counter()
    return {
        "retriever": retriever,
        "rows": len(texts),
        "load_s": round(loaded - start, 2),
        "rank_s": round(ranked - loaded, 2),
        "fingerprint_s": round(hashed - ranked, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "file_mib": round(path.stat().st_size / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--task", default="task199")
    parser.add_argument("--retriever", default="bm25", choices=["bm25", "embeddings"])
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # the child
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.task, args.retriever)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        write_corpus(path, args.rows)
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--measure",
                str(path),
                "--task",
                args.task,
                "--retriever",
                args.retriever,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    print(done.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
