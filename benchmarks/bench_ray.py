"""`--engine ray` vs plain vLLM on this machine (issue 23), each arm run one after the other in one process.

    python benchmarks/bench_ray.py --prompts 256 --max-new-tokens 64

On the embedded model (or --model), one fixed batch of sampled task prompts:
  1. plain vLLM (`VLLMEngine`, all cores): engine start, a one-prompt call, the batch;
  2. Ray, backend "replicas" (engines as actors that stay up): start, a one-prompt call, the batch,
     with 1 replica of 1 CPU and with 2 replicas of 1 CPU each, back to back under the same load;
  3. Ray, backend "data" (Ray Data LLM, replicas started per call): a one-prompt call (its fixed
     cost, paid by every call) and the batch, 1 replica.
The synthesis comparison (accepted pairs per minute, `selfguide synthesize --engine ray` vs
`--engine vllm`) is two commands; docs/BENCHMARKS.md has them. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any


def _prompts(tokenizer: Any, count: int) -> list[str]:
    from selfguide_hf.prompts import render_task_prompt
    from selfguide_hf.task import TaskSpec

    spec = TaskSpec.load("task738")
    texts = [
        f"Sentence {i}: the claim number {i} is made about a city, a river and a year." for i in range(count)
    ]
    return [render_task_prompt(spec, text, tokenizer) for text in texts]


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - start, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from selfguide_hf.generation import SamplingParams
    from selfguide_hf.models import resolve_model
    from selfguide_hf.ray_cluster import local_cores, start_ray
    from selfguide_hf.ray_engine import RayEngine
    from selfguide_hf.vllm_engine import VLLMEngine

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = _prompts(tokenizer, args.prompts)
    one = SamplingParams(max_new_tokens=1, temperature=0.0)
    batch = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.7, top_k=50)
    cores = local_cores()
    result: dict[str, Any] = {
        "model": args.model,
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "cores": cores,
        "load_average_start": round(os.getloadavg()[0], 2),
    }

    engine, result["vllm_start_s"] = _timed(lambda: VLLMEngine(path, tokenizer))
    _, result["vllm_one_prompt_s"] = _timed(lambda: engine.generate(prompts[:1], one))
    _, result["vllm_batch_s"] = _timed(lambda: engine.generate(prompts, batch))
    engine.close()

    _, result["ray_cluster_start_s"] = _timed(lambda: start_ray())
    for count in (1, 2):
        replicas, result[f"replicas_{count}x1cpu_start_s"] = _timed(
            lambda count=count: RayEngine(path, tokenizer, replicas=count, threads=1)
        )
        _, result[f"replicas_{count}x1cpu_one_prompt_s"] = _timed(
            lambda r=replicas: r.generate(prompts[:1], one)
        )
        _, result[f"replicas_{count}x1cpu_batch_s"] = _timed(lambda r=replicas: r.generate(prompts, batch))
        replicas.close()
    result["two_vs_one_replica"] = round(
        result["replicas_1x1cpu_batch_s"] / result["replicas_2x1cpu_batch_s"], 2
    )

    data = RayEngine(path, tokenizer, backend="data")
    _, result["data_one_prompt_s"] = _timed(lambda: data.generate(prompts[:1], one))
    _, result["data_batch_s"] = _timed(lambda: data.generate(prompts, batch))
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
