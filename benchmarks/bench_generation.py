"""Benchmark the generation engine on a real small model (CPU).

    python benchmarks/bench_generation.py --model /path/to/SmolLM2-135M-Instruct --out bench_generation.json

(a) annotation: n samples per ~300+-token annotation prompt (instruction,
    demonstrations as chat turns, a new input), shared prefill vs plain
    ``num_return_sequences`` (which re-encodes the prompt n times);
(b) input generation: the engine (length-sorted batches, stop strings, a
    sensible token budget) vs the naive loop of the reference code (one prompt
    at a time, no stop strings, 500 new tokens, ``num_return_sequences``).

Both arms of a comparison run on the same prompts with the same sampling
settings, alternating chunk by chunk so load from other processes on a shared
machine hits both alike. The machine's load average is recorded with the
figures. Peak RSS is ``resource.getrusage`` of this process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from selfguide_hf.generation import SamplingParams, TransformersEngine  # noqa: E402

DEFAULT_TASK = REPO.parent / "shared" / "ni" / "task738"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", required=True, help="local transformers folder of a causal LM with a chat template"
    )
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument(
        "--task-dir", type=Path, default=DEFAULT_TASK, help="NI task folder (spec.json, validation.jsonl)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-annotation", action="store_true")
    p.add_argument("--skip-input-generation", action="store_true")
    g = p.add_argument_group("(a) annotation")
    g.add_argument("--annotation-prompts", type=int, default=6)
    g.add_argument("--samples", type=int, default=10, help="samples per annotation prompt (n)")
    g.add_argument("--min-prompt-tokens", type=int, default=300)
    g.add_argument("--annotation-max-new-tokens", type=int, default=32)
    g.add_argument("--annotation-batch-size", type=int, default=10, help="sequences decoded together")
    g = p.add_argument_group("(b) input generation")
    g.add_argument("--generation-prompts", type=int, default=6)
    g.add_argument("--generation-max-new-tokens", type=int, default=160)
    g.add_argument("--naive-max-new-tokens", type=int, default=500)
    g.add_argument("--generation-batch-size", type=int, default=8)
    return p.parse_args(argv)


# ---------------------------------------------------------------------- prompts


def load_task(task_dir: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    spec = json.loads((task_dir / "spec.json").read_text())
    rows = [
        json.loads(line) for line in (task_dir / "validation.jsonl").read_text().splitlines() if line.strip()
    ]
    return spec, rows


def render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def annotation_prompts(
    tokenizer: Any, spec: dict[str, Any], rows: list[dict[str, str]], count: int, min_tokens: int
) -> list[str]:
    """Instruction, demonstrations as user/assistant turns (spec demos, then validation rows
    until the prompt is at least ``min_tokens`` long), then a new input."""
    demos = [(d["input"], d["output"]) for d in spec["demonstrations"]]
    pool = list(rows)
    extra = 0
    while True:
        shots = demos + [(r["input"], r["output"]) for r in pool[:extra]]
        probe = render(tokenizer, _annotation_messages(spec["instruction"], shots, pool[-1]["input"]))
        if (
            len(tokenizer(probe, add_special_tokens=False)["input_ids"]) >= min_tokens
            or extra >= len(pool) // 2
        ):
            break
        extra += 1
    new_inputs = pool[extra : extra + count]
    return [
        render(tokenizer, _annotation_messages(spec["instruction"], shots, r["input"])) for r in new_inputs
    ]


def _annotation_messages(
    instruction: str, shots: list[tuple[str, str]], new_input: str
) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": instruction}]
    for x, y in shots:
        messages += [{"role": "user", "content": x}, {"role": "assistant", "content": y}]
    messages.append({"role": "user", "content": new_input})
    return messages


def input_generation_prompts(
    tokenizer: Any, spec: dict[str, Any], rows: list[dict[str, str]], count: int, seed: int
) -> list[str]:
    """Instruction + example inputs (demonstrations plus 1..3 'accepted' inputs), ask for one new input."""
    rng = random.Random(seed)
    labels = spec.get("labels") or []
    prompts = []
    for _ in range(count):
        examples = [d["input"] for d in spec["demonstrations"]]
        examples += [r["input"] for r in rng.sample(rows, rng.randint(1, 3))]
        shown = "\n\n".join(f"Input: {x}" for x in examples)
        ask = "Write one new input for this task, different from the examples."
        if labels:
            ask += f' Write an input whose answer is "{rng.choice(labels)}".'
        ask += " Reply with the input only."
        content = f"{spec['instruction']}\n\nExample inputs:\n\n{shown}\n\n{ask}"
        prompts.append(render(tokenizer, [{"role": "user", "content": content}]))
    return prompts


# ---------------------------------------------------------------------- measuring


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kB


def count_tokens(tokenizer: Any, texts: list[str]) -> int:
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else 0


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def bench_annotation(
    model: Any, tokenizer: Any, prompts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    sampling = SamplingParams(
        max_new_tokens=args.annotation_max_new_tokens,
        temperature=0.2,
        top_k=10,
        n=args.samples,
        stop=["\n\n"],
        seed=args.seed,
    )
    arms = {
        "shared_prefill": TransformersEngine(
            model, tokenizer, batch_size=args.annotation_batch_size, show_progress=False, share_prefill=True
        ),
        "num_return_sequences": TransformersEngine(
            model, tokenizer, batch_size=args.annotation_batch_size, show_progress=False, share_prefill=False
        ),
    }
    prompt_tokens = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    per_chunk = max(1, args.annotation_batch_size // args.samples)
    wall = dict.fromkeys(arms, 0.0)
    cpu = dict.fromkeys(arms, 0.0)
    outputs: dict[str, list[str]] = {name: [] for name in arms}
    for chunk in chunks(prompts, per_chunk):
        for name, engine in arms.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            out = engine.generate(chunk, sampling)
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
            outputs[name] += [s for samples in out for s in samples]
    result: dict[str, Any] = {
        "prompts": len(prompts),
        "samples_per_prompt": args.samples,
        "prompt_tokens_mean": sum(prompt_tokens) / len(prompt_tokens),
        "prompt_tokens_min": min(prompt_tokens),
        "sampling": {
            "temperature": 0.2,
            "top_k": 10,
            "max_new_tokens": sampling.max_new_tokens,
            "stop": sampling.stop,
        },
        "arms": {},
    }
    for name in arms:
        gen_tokens = count_tokens(tokenizer, outputs[name])
        result["arms"][name] = {
            "wall_s": round(wall[name], 2),
            "cpu_s": round(cpu[name], 2),
            "completions_per_min": round(len(outputs[name]) / wall[name] * 60, 1),
            "generated_tokens": gen_tokens,
            "generated_tokens_per_s": round(gen_tokens / wall[name], 2),
            # prompt tokens the annotation has to condition on (n per prompt) + generated tokens, per second
            "effective_tokens_per_s": round((sum(prompt_tokens) * args.samples + gen_tokens) / wall[name], 1),
            "example_output": outputs[name][0] if outputs[name] else "",
        }
    result["speedup"] = round(wall["num_return_sequences"] / wall["shared_prefill"], 2)
    result["peak_rss_mb_after"] = round(peak_rss_mb(), 1)
    return result


def naive_generate(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int, n: int) -> list[str]:
    """The reference code's way: one prompt, no stop strings, a 500-token budget."""
    enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=0.7,
            top_k=40,
            top_p=1.0,
            num_return_sequences=n,
            pad_token_id=tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id,
        )
    width = enc["input_ids"].shape[1]
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def bench_input_generation(
    model: Any, tokenizer: Any, prompts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    stop = ["\n\n", "\nInput:", "\nOutput:"]
    sampling = SamplingParams(
        max_new_tokens=args.generation_max_new_tokens,
        temperature=0.7,
        top_k=40,
        n=1,
        stop=stop,
        seed=args.seed,
    )
    engine = TransformersEngine(model, tokenizer, batch_size=args.generation_batch_size, show_progress=False)
    wall = {"engine": 0.0, "naive_loop": 0.0}
    cpu = {"engine": 0.0, "naive_loop": 0.0}
    outputs: dict[str, list[str]] = {"engine": [], "naive_loop": []}
    torch.manual_seed(args.seed)
    for chunk in chunks(prompts, args.generation_batch_size):
        start, start_cpu = time.perf_counter(), time.process_time()
        outputs["engine"] += [o[0] for o in engine.generate(chunk, sampling)]
        wall["engine"] += time.perf_counter() - start
        cpu["engine"] += time.process_time() - start_cpu
        start, start_cpu = time.perf_counter(), time.process_time()
        for p in chunk:
            outputs["naive_loop"] += naive_generate(model, tokenizer, p, args.naive_max_new_tokens, 1)
        wall["naive_loop"] += time.perf_counter() - start
        cpu["naive_loop"] += time.process_time() - start_cpu
    prompt_tokens = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    result: dict[str, Any] = {
        "prompts": len(prompts),
        "prompt_tokens_mean": sum(prompt_tokens) / len(prompt_tokens),
        "engine_settings": {
            "batch_size": args.generation_batch_size,
            "max_new_tokens": sampling.max_new_tokens,
            "stop": stop,
        },
        "naive_settings": {"batch_size": 1, "max_new_tokens": args.naive_max_new_tokens, "stop": None},
        "arms": {},
    }
    for name in wall:
        gen_tokens = count_tokens(tokenizer, outputs[name])
        result["arms"][name] = {
            "wall_s": round(wall[name], 2),
            "cpu_s": round(cpu[name], 2),
            "completions_per_min": round(len(outputs[name]) / wall[name] * 60, 2),
            "generated_tokens": gen_tokens,
            "generated_tokens_per_s": round(gen_tokens / wall[name], 2),
            "mean_completion_chars": round(sum(map(len, outputs[name])) / max(1, len(outputs[name])), 1),
            "completions_with_blank_line": sum("\n\n" in o for o in outputs[name]),
            "example_output": outputs[name][0] if outputs[name] else "",
        }
    result["speedup"] = round(wall["naive_loop"] / wall["engine"], 2)
    result["peak_rss_mb_after"] = round(peak_rss_mb(), 1)
    return result


# ---------------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Generation benchmark, {results['date']}, model `{results['model']}`, "
        f"{results['threads']} threads, load average before/after {results['loadavg_before']} / "
        f"{results['loadavg_after']}, peak RSS {results['peak_rss_mb']} MB",
        "",
        "| benchmark | arm | wall s | CPU s | completions/min | generated tok/s | effective tok/s | speedup |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, title in (("annotation", "(a) annotation"), ("input_generation", "(b) input generation")):
        if key not in results:
            continue
        bench = results[key]
        for i, (arm, r) in enumerate(bench["arms"].items()):
            speedup = f"**{bench['speedup']}x**" if i == 0 else ""
            lines.append(
                f"| {title} | {arm} | {r['wall_s']} | {r['cpu_s']} | {r['completions_per_min']} | "
                f"{r['generated_tokens_per_s']} | {r.get('effective_tokens_per_s', '')} | {speedup} |"
            )
    if "annotation" in results:
        a = results["annotation"]
        lines.append("")
        lines.append(
            f"(a): {a['prompts']} prompts x n={a['samples_per_prompt']}, prompt tokens mean "
            f"{a['prompt_tokens_mean']:.0f} (min {a['prompt_tokens_min']}); effective tok/s counts each prompt "
            "token once per sample plus generated tokens."
        )
    if "input_generation" in results:
        b = results["input_generation"]
        lines.append(
            f"(b): {b['prompts']} prompts, engine batch {b['engine_settings']['batch_size']} with stop strings and "
            f"{b['engine_settings']['max_new_tokens']} new tokens; naive loop one prompt at a time, "
            f"{b['naive_settings']['max_new_tokens']} new tokens, no stop strings."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    spec, rows = load_task(args.task_dir)

    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": str(args.model),
        "task": spec.get("task", args.task_dir.name),
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    # Warm up both code paths on a full-length prompt: the first long forward of a process is
    # several times slower (kernel selection, allocator), and would be charged to whichever arm ran first.
    warm = annotation_prompts(tokenizer, spec, rows, 1, args.min_prompt_tokens)
    for share in (True, False):
        TransformersEngine(model, tokenizer, show_progress=False, share_prefill=share).generate(
            warm, SamplingParams(max_new_tokens=2, temperature=1.0, n=2, stop=["\n\n"], seed=0)
        )
    if not args.skip_annotation:
        prompts = annotation_prompts(tokenizer, spec, rows, args.annotation_prompts, args.min_prompt_tokens)
        results["annotation"] = bench_annotation(model, tokenizer, prompts, args)
    if not args.skip_input_generation:
        prompts = input_generation_prompts(tokenizer, spec, rows, args.generation_prompts, args.seed)
        results["input_generation"] = bench_input_generation(model, tokenizer, prompts, args)
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    results["markdown"] = markdown(results)
    print(results["markdown"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
