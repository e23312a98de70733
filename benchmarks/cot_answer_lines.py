"""How often does the model end a reasoned reply with a usable ``Answer:`` line? (chain of thought, issue 13)

    python benchmarks/cot_answer_lines.py task199,task1195 [--model MODEL] [--num-inputs 20]

Builds 20 raw inputs per task through the builder with ``chain_of_thought`` and
``reasoning_target: reasoning`` (5 samples each, vLLM when installed, a fresh
cache) and prints the funnel: how many inputs and samples gave no final answer,
and the first kept completion.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":
    from selfguide_hf.builder import build_selfguide_dataset, get_funnel

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tasks")
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--num-inputs", type=int, default=20)
    args = parser.parse_args()
    out = {}
    for task in args.tasks.split(","):
        with tempfile.TemporaryDirectory() as cache:
            t = time.perf_counter()
            try:
                data = build_selfguide_dataset(
                    task,
                    model=args.model,
                    num_inputs=args.num_inputs,
                    seed=0,
                    engine="auto",
                    cache_dir=cache,
                    chain_of_thought=True,
                    reasoning_target="reasoning",
                    min_pairs=1,
                    num_samples=5,
                )
                f = get_funnel(data)
                out[task] = {
                    "kept": len(data),
                    "funnel": f.get("dropped"),
                    "sample_drops": f.get("notes", {}).get("sample_drops"),
                    "example": data[0]["completion"][:400] if len(data) else None,
                    "s": round(time.perf_counter() - t),
                }
            except Exception as e:
                out[task] = {"error": str(e)[:1500]}
    print(json.dumps(out, indent=1))
