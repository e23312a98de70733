"""Build the package's bundled task data from a Natural Instructions folder.

Reads `<ni_dir>/<task>/{spec.json,validation.jsonl,test.jsonl}` and writes
`selfguide_hf/data/tasks/<task>/{spec.json,validation.parquet,test.parquet}`
plus an index, so that the installed package never reads `../shared` at run
time. Usage:

    python dataset_scripts/build_bundled_tasks.py --ni-dir ../shared/ni
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from selfguide_hf.task import TaskSpec

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "selfguide_hf" / "data" / "tasks"
SPLITS = ("validation", "test")


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("input"), str) or "output" not in row:
                raise ValueError(f"{path}:{lineno}: each row needs 'input' and 'output'")
            out = row["output"]
            rows.append({"input": row["input"], "output": out if isinstance(out, list) else [out]})
    return rows


def build_task(task_dir: Path, out_dir: Path) -> dict:
    spec = TaskSpec.from_spec_file(task_dir / "spec.json")  # validates
    target = out_dir / spec.name
    target.mkdir(parents=True, exist_ok=True)
    (target / "spec.json").write_text(
        json.dumps(spec.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    sizes = {}
    for split in SPLITS:
        rows = read_jsonl(task_dir / f"{split}.jsonl")
        table = pa.table(
            {"input": [r["input"] for r in rows], "output": [r["output"] for r in rows]},
            schema=pa.schema([("input", pa.string()), ("output", pa.list_(pa.string()))]),
        )
        pq.write_table(table, target / f"{split}.parquet", compression="zstd")
        sizes[split] = len(rows)
    return {"task": spec.name, "type": spec.type, "splits": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ni-dir", type=Path, default=REPO.parent / "shared" / "ni")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.out_dir.exists():
        shutil.rmtree(args.out_dir)
    args.out_dir.mkdir(parents=True)
    index = [
        build_task(d, args.out_dir) for d in sorted(args.ni_dir.iterdir()) if (d / "spec.json").is_file()
    ]
    (args.out_dir / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(index)} tasks to {args.out_dir}")


if __name__ == "__main__":
    main()
