"""vLLM vs the transformers engine on the embedded model: synthesis pairs/min and evaluation rows/s.

    python benchmarks/bench_engines.py --task task199 --num-inputs 100 --eval-rows 100 \
        --json benchmarks/results/engines.json

Each arm runs in its own process, one after the other (run it with nothing
else on the machine, and say so): the same task, seed and number of raw
inputs through the `datasets` builder (start-up included, a fresh cache), and
greedy evaluation of the same rows with the base model (start-up reported
apart from rows per second once started). Prints a markdown table and the
ratios vLLM / transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def worker(engine: str, task: str, num_inputs: int, eval_rows: int, seed: int, out: Path) -> None:
    """One arm, in its own process: synthesis through the builder, then evaluation of the base model."""
    sys.path.insert(0, str(ROOT))
    from transformers import AutoConfig, AutoTokenizer

    from selfguide_hf.builder import build_selfguide_dataset, get_funnel
    from selfguide_hf.bundled import bundled_spec
    from selfguide_hf.engines import make_engine
    from selfguide_hf.evaluation import evaluate_model, load_eval_rows
    from selfguide_hf.models import resolve_model

    result: dict[str, Any] = {"engine": engine}
    model_path = resolve_model(None)
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        data = build_selfguide_dataset(task, num_inputs=num_inputs, seed=seed, engine=engine, cache_dir=cache)
        seconds = time.perf_counter() - started
    funnel = get_funnel(data)
    result["synthesis"] = {
        "seconds": round(seconds, 1),
        "raw_inputs": funnel["raw_inputs"],
        "kept": len(data),
        "pairs_per_min": round(len(data) / (seconds / 60), 2),
    }
    spec = bundled_spec(task)
    rows = load_eval_rows(spec, split="test", max_eval=eval_rows)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    started = time.perf_counter()
    eng = make_engine(
        engine,
        model_path,
        tokenizer,
        max_model_len=AutoConfig.from_pretrained(model_path).max_position_embeddings,
    )
    startup = time.perf_counter() - started
    started = time.perf_counter()
    scored = evaluate_model(
        getattr(eng, "model", None), tokenizer, spec, rows, engine=eng, show_progress=False
    )
    seconds = time.perf_counter() - started
    if hasattr(eng, "close"):
        eng.close()
    result["evaluation"] = {
        "rows": len(rows),
        "startup_s": round(startup, 1),
        "seconds": round(seconds, 1),
        "rows_per_s": round(len(rows) / seconds, 2),
        "score": round(scored.score, 2),
    }
    out.write_text(json.dumps(result, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="task199")
    parser.add_argument("--num-inputs", type=int, default=100)
    parser.add_argument("--eval-rows", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engines", default="vllm,transformers")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", nargs=2, metavar=("ENGINE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.task, args.num_inputs, args.eval_rows, args.seed, Path(args.worker[1]))
        return 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    arms = {}
    load_at_start = round(os.getloadavg()[0], 2)
    for engine in args.engines.split(","):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            out = Path(handle.name)
        cmd = [sys.executable, __file__, "--task", args.task, "--num-inputs", str(args.num_inputs)]
        cmd += ["--eval-rows", str(args.eval_rows), "--seed", str(args.seed), "--worker", engine, str(out)]
        print(f"{engine}: running …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        subprocess.run(cmd, env=env, check=True)
        arms[engine] = {**json.loads(out.read_text()), "process_s": round(time.perf_counter() - started, 1)}
        out.unlink()
    results = {
        "command": "python benchmarks/bench_engines.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "load_average_start": load_at_start,
        "load_average_end": round(os.getloadavg()[0], 2),
        "arms": arms,
    }
    if {"vllm", "transformers"} <= set(arms):
        v, t = arms["vllm"], arms["transformers"]
        results["ratios"] = {
            "synthesis_pairs_per_min": round(
                v["synthesis"]["pairs_per_min"] / t["synthesis"]["pairs_per_min"], 2
            ),
            "evaluation_rows_per_s": round(v["evaluation"]["rows_per_s"] / t["evaluation"]["rows_per_s"], 2),
        }
    print(
        "| engine | synthesis s | pairs kept / raw | pairs/min | eval start-up s | eval rows/s | eval score |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, arm in arms.items():
        s, e = arm["synthesis"], arm["evaluation"]
        print(
            f"| {name} | {s['seconds']} | {s['kept']} / {s['raw_inputs']} | {s['pairs_per_min']} | "
            f"{e['startup_s']} | {e['rows_per_s']} | {e['score']} |"
        )
    if "ratios" in results:
        print(f"\nvLLM / transformers: {json.dumps(results['ratios'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
