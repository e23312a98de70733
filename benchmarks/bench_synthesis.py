"""Benchmark SELF-GUIDE synthesis on the embedded model: yield per task, and engine vs a naive loop.

    python benchmarks/bench_synthesis.py --tasks task190,task199 --num-inputs 60 \
        --speed-tasks task738,task1195 --speed-num-inputs 20 --threads 1

Yield: for each task, the default preset from ``--num-inputs`` raw inputs;
kept / raw, classes, seconds, pairs per minute, peak RSS.

Speed: the same config and seed run twice, once through `TransformersEngine`
(batched, stop strings, shared prefill, label scoring with a shared prefix)
and once through a naive loop that does what the reference code's
transformers path does: one prompt at a time, no stop strings, always 500 new
tokens allowed, ``num_return_sequences`` for the samples, and one full forward
pass per (prompt, label) when scoring. Reported: accepted pairs per minute of
each and their ratio.

Each measurement runs in its own subprocess (clean peak RSS, no shared
caches). Results go to ``--out`` as JSON and are printed as markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

CLASSIFICATION = ["task190", "task199", "task200", "task738", "task937", "task1385", "task1386"]
NAIVE_MAX_NEW_TOKENS = 500


# ----------------------------------------------------------------------- engines
class TimedEngine:
    """Wraps an engine: wall time in the model and tokens of the completions it returned."""

    def __init__(self, inner: Any, tokenizer: Any) -> None:
        self.inner = inner
        self.tokenizer = tokenizer
        self.seconds = 0.0
        self.tokens = 0

    def generate(self, prompts: list[str], sampling: Any) -> list[list[str]]:
        start = time.perf_counter()
        out = self.inner.generate(prompts, sampling)
        self.seconds += time.perf_counter() - start
        self.tokens += sum(
            len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for o in out for t in o
        )
        return out

    def score_choices(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
        start = time.perf_counter()
        out = self.inner.score_choices(prompts, choices)
        self.seconds += time.perf_counter() - start
        return out


class NaiveEngine:
    """The reference code's transformers path: one prompt at a time, no stop strings, 500 new tokens."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def generate(self, prompts: list[str], sampling: Any) -> list[list[str]]:
        import torch

        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        results = []
        for prompt in prompts:
            enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                out = self.model.generate(
                    **enc,
                    do_sample=sampling.temperature > 0,
                    temperature=sampling.temperature or None,
                    top_k=sampling.top_k or 0,
                    top_p=sampling.top_p or 1.0,
                    num_return_sequences=sampling.n,
                    max_new_tokens=NAIVE_MAX_NEW_TOKENS,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            width = enc["input_ids"].shape[1]
            results.append(
                [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
            )
        return results

    def score_choices(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
        import torch

        scores = []
        for prompt in prompts:
            n_prompt = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            row = []
            for choice in choices:
                ids = self.tokenizer(prompt + choice, return_tensors="pt", add_special_tokens=False)[
                    "input_ids"
                ]
                with torch.inference_mode():
                    logprobs = torch.log_softmax(self.model(ids).logits[0, :-1].float(), dim=-1)
                targets = ids[0, 1:]
                picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                row.append(float(picked[n_prompt - 1 :].sum()))
            scores.append(row)
        return scores


# ----------------------------------------------------------------------- worker
def run_worker(task: str, num_inputs: int, seed: int, engine_kind: str, threads: int) -> dict[str, Any]:
    import torch

    from selfguide_hf.generation import TransformersEngine
    from selfguide_hf.models import load_causal_lm
    from selfguide_hf.synthesis import SynthesisConfig, SynthesisError, synthesize
    from selfguide_hf.task import TaskSpec

    torch.set_num_threads(threads)
    model, tokenizer = load_causal_lm("default")
    inner = (
        TransformersEngine(model, tokenizer, show_progress=False)
        if engine_kind == "engine"
        else NaiveEngine(model, tokenizer)
    )
    engine = TimedEngine(inner, tokenizer)
    spec = TaskSpec.load(task)
    config = SynthesisConfig.preset("default", num_inputs=num_inputs, seed=seed)
    start = time.perf_counter()
    error = None
    try:
        result = synthesize(
            spec,
            engine,
            tokenizer,
            config,
            show_progress=False,
            context_length=model.config.max_position_embeddings,
        )
        funnel = result.funnel.to_dict()
    except SynthesisError as exc:
        error = str(exc).splitlines()[0]
        funnel = exc.funnel.to_dict() if exc.funnel is not None else None
    seconds = time.perf_counter() - start
    kept = funnel["kept"] if funnel else 0
    return {
        "task": task,
        "type": spec.type,
        "engine": engine_kind,
        "num_inputs": num_inputs,
        "seed": seed,
        "kept": kept,
        "yield": kept / num_inputs,
        "seconds": round(seconds, 1),
        "pairs_per_min": round(60 * kept / seconds, 2),
        "model_seconds": round(engine.seconds, 1),
        "completion_tokens": engine.tokens,
        "tokens_per_s": round(engine.tokens / engine.seconds, 1) if engine.seconds else 0.0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "funnel": funnel,
        "error": error,
    }


def spawn(task: str, num_inputs: int, seed: int, engine_kind: str, threads: int) -> dict[str, Any]:
    """One measurement in a fresh process."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        task,
        "--num-inputs",
        str(num_inputs),
        "--seed",
        str(seed),
        "--engine",
        engine_kind,
        "--threads",
        str(threads),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed for {task}/{engine_kind}:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {task} {engine_kind}: kept {result['kept']}/{num_inputs} in {result['seconds']} s",
        file=sys.stderr,
    )
    return result


# ----------------------------------------------------------------------- report
def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Measured {results['date']} on {results['machine']} ({results['threads']} torch thread(s)); "
        f"load average at start {results['load_average']}.",
        "",
    ]
    if results["yield"]:
        lines += [
            "| task | type | raw | kept | yield | classes kept | s | pairs/min | tok/s | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["yield"]:
            classes = ", ".join(f"{k}={v}" for k, v in (r["funnel"] or {}).get("classes", {}).items()) or "-"
            lines.append(
                f"| {r['task']} | {r['type']} | {r['num_inputs']} | {r['kept']} | {100 * r['yield']:.0f} % | "
                f"{classes} | {r['seconds']} | {r['pairs_per_min']} | {r['tokens_per_s']} | {r['peak_rss_mb']} |"
            )
        lines.append("")
    if results["speed"]:
        lines += [
            "| task | engine pairs/min | naive pairs/min | speed-up | engine s | naive s | engine kept | naive kept |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in results["speed"]:
            e, n = s["engine"], s["naive"]
            ratio = f"{s['speedup']:.1f}x" if s["speedup"] is not None else "n/a"
            lines.append(
                f"| {s['task']} | {e['pairs_per_min']} | {n['pairs_per_min']} | {ratio} | {e['seconds']} | "
                f"{n['seconds']} | {e['kept']} | {n['kept']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks",
        default=",".join(CLASSIFICATION),
        help="comma-separated tasks for the yield table ('' to skip)",
    )
    parser.add_argument("--num-inputs", type=int, default=100)
    parser.add_argument(
        "--speed-tasks", default="task738,task1195", help="tasks for engine vs naive ('' to skip)"
    )
    parser.add_argument("--speed-num-inputs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per worker; on a shared 2-core machine 1 avoids OpenMP oversubscription",
    )
    parser.add_argument("--out", default="benchmarks/results/synthesis.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="engine", choices=["engine", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(run_worker(args.worker, args.num_inputs, args.seed, args.engine, args.threads)))
        return

    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "threads": args.threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "yield": [],
        "speed": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for task in filter(None, args.tasks.split(",")):
        results["yield"].append(spawn(task, args.num_inputs, args.seed, "engine", args.threads))
        out.write_text(json.dumps(results, indent=2) + "\n")
    for task in filter(None, args.speed_tasks.split(",")):
        engine = spawn(task, args.speed_num_inputs, args.seed, "engine", args.threads)
        naive = spawn(task, args.speed_num_inputs, args.seed, "naive", args.threads)
        speedup = engine["pairs_per_min"] / naive["pairs_per_min"] if naive["pairs_per_min"] else None
        results["speed"].append({"task": task, "engine": engine, "naive": naive, "speedup": speedup})
        out.write_text(json.dumps(results, indent=2) + "\n")
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
