"""Model and dataset cards for what a self-guide run publishes.

A card has to let a stranger judge and reproduce the adapter: which base
model, which task, how the synthetic data was made and how much of it
survived each filter, what evaluation said before and after, and the exact
command. The text comes from the templates below (`string.Template`, so task
text with braces is safe); the YAML header is built with `huggingface_hub`.
Nothing here reads tokens or the environment, so a card cannot leak one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from string import Template
from typing import Any

from selfguide_hf.task import TaskSpec

PAPER_URL = "https://arxiv.org/abs/2407.12874"
CITATION = """@misc{zhao2024selfguide,
  title         = {SELF-GUIDE: Better Task-Specific Instruction Following via Self-Synthetic Finetuning},
  author        = {Chenyang Zhao and Xueying Jia and Vijay Viswanathan and Tongshuang Wu and Graham Neubig},
  year          = {2024},
  eprint        = {2407.12874},
  archivePrefix = {arXiv},
  primaryClass  = {cs.CL},
  url           = {https://arxiv.org/abs/2407.12874}
}"""
INSTRUCTION_PREVIEW_CHARS = 600
FUNNEL_SKIP = frozenset({"examples", "task"})

# Both cards end alike: the command that reproduces them, the license, the paper to cite.
CARD_FOOTER = """## Reproduce

```bash
$command
```

## License

$license_text

## Citation

```bibtex
$citation
```
"""

MODEL_CARD_TEMPLATE = Template(
    """
# $title

A $method_text of [$base_model]($base_model_url)$base_model_note for one task, **$task**, trained only on data
the base model wrote for itself with [SELF-GUIDE]($paper_url) (Zhao et al., 2024): the model
generated task inputs from a few demonstrations, answered them, the pairs were filtered by rules
and self-consistency, and the same model was finetuned on what survived. No teacher model and no
human labels beyond the demonstrations.

## Task

- name: `$task` ($task_type, scored by $metric)
- demonstrations: $num_demos$labels_line

> $instruction

## Synthetic data

$dataset_line

$synthesis_table

### Funnel

$funnel

## Training

$training_table

## Evaluation

$evaluation

## Use

```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("$repo_hint")
tokenizer = AutoTokenizer.from_pretrained("$repo_hint")
```

Prompt it exactly as it was trained, with the task spec this repository carries
(`$spec_file`: the instruction, the demonstrations and the labels):

```python
from huggingface_hub import hf_hub_download
from selfguide_hf import TaskSpec
from selfguide_hf.prompts import render_task_prompt

spec = TaskSpec.load(hf_hub_download("$repo_hint", "$spec_file"))
prompt = render_task_prompt(spec, "your input", tokenizer)  # demonstrations as chat turns, then the input
ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=64)[0, ids.shape[1]:], skip_special_tokens=True))
```

"""
    + CARD_FOOTER
)

DATASET_CARD_TEMPLATE = Template(
    """
# $title

Task data for **$task** written by [$generator]($generator_url)$generator_note for itself with
[SELF-GUIDE]($paper_url) (Zhao et al., 2024): inputs generated from a few demonstrations,
answered by the same model, filtered by rules and self-consistency. $num_rows rows.

Columns: `prompt` / `completion` (the task prompt and answer rendered with the generator's chat
template), `input`, `output`, and provenance: `round` (synthesis round), `vote_share` and
`num_agreeing` (self-consistency of the answer), and `reasoning` (the chain of thought trained on, when
the model was taught to reason; else empty).

## Task

- name: `$task` ($task_type, scored by $metric)
- demonstrations: $num_demos$labels_line

> $instruction

## Synthesis configuration

$synthesis_table

## Funnel

$funnel

"""
    + CARD_FOOTER
)


@dataclass
class CardInfo:
    """What a card states; built by `training.card_info` from a run."""

    spec: TaskSpec
    base_model: str
    method: str = "lora"
    manifest: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    synthesis: dict[str, Any] = field(default_factory=dict)
    funnel: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    command: str = ""
    license: str = "other"
    dataset_hub_id: str | None = None
    num_rows: int | None = None
    repo_id: str | None = None
    base_model_note: str = ""  # what the weights really were, when not the Hub's (the embedded copy)


def _hub_url(name: str, kind: str = "model") -> str:
    if name.startswith(("/", ".", "~")):
        return "#"  # a local folder: nothing to link to
    prefix = "https://huggingface.co/datasets/" if kind == "dataset" else "https://huggingface.co/"
    return prefix + name


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, default=str, sort_keys=True)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: dict[str, Any], header: tuple[str, str] = ("setting", "value")) -> str:
    """A two-column markdown table, skipping unset values."""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows.items() if v is not None]
    return "\n".join(lines) if len(lines) > 2 else "_not recorded_"


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix or "value": data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def synthesis_text(synthesis: dict[str, Any]) -> str:
    """The synthesis settings; the builder's full parameter set folded away under the table."""
    synthesis = dict(synthesis)
    parameters = synthesis.pop("parameters", None)
    text = table(synthesis)
    if parameters:
        dumped = json.dumps(parameters, indent=2, sort_keys=True, default=str)
        text += f"\n\n<details><summary>All synthesis parameters</summary>\n\n```json\n{dumped}\n```\n\n</details>"
    return text


def funnel_text(funnel: dict[str, Any] | None) -> str:
    """The drop-reason funnel as a table (any nesting is flattened to dotted names)."""
    if not funnel:
        return "_No funnel recorded (the synthetic set was loaded from a file)._"
    # Example texts stay in selfguide_funnel.json; the card keeps the figures.
    figures = {k: v for k, v in funnel.items() if k not in FUNNEL_SKIP}
    return table(_flatten(figures), header=("stage", "count"))


def _score_rows(scores: Any) -> dict[str, Any]:
    if (
        isinstance(scores, dict) and "score" in scores and "metric" in scores
    ):  # an evaluation.EvalResult summary
        rows = {str(scores["metric"]): scores["score"], "examples": scores.get("num_examples")}
        trivial = scores.get("trivial_baseline") or {}
        if trivial:
            rows[f"{trivial['name']} score (trivial baseline)"] = trivial["score"]
        elif scores.get("majority_rate") is not None:
            rows["majority-class rate"] = scores["majority_rate"]
        rows["answers that are labels (%)"] = scores.get("label_share")
        rows["exact match among them"] = scores.get("label_exact_match")
        rows["answers copying the input (%)"] = scores.get("copy_share")
        return {k: v for k, v in rows.items() if v is not None}
    if isinstance(scores, dict):
        return {
            k: v
            for k, v in _flatten(scores).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    if isinstance(scores, (int, float)):
        return {"score": scores}
    return {}


def evaluation_text(evaluation: dict[str, Any] | None) -> str:
    """Before/after scores side by side; says plainly when no evaluation was run."""
    if not evaluation:
        return "_Not evaluated in this run (train with `--evaluate` to add before/after scores)._"
    before = _score_rows(evaluation.get("before"))
    after = _score_rows(evaluation.get("after"))
    names = list(dict.fromkeys([*before, *after]))
    if not names:
        return "_Evaluation ran but returned no numeric scores._"
    split = evaluation.get("split", "test")
    lines = [f"**{evaluation['verdict_sentence']}.**", ""] if evaluation.get("verdict_sentence") else []
    lines += [f"On the task's `{split}` split, greedy decoding with the training prompt.", ""]
    lines += ["| metric | base model | this adapter |", "|---|---|---|"]
    for name in names:
        lines.append(f"| {_cell(name)} | {_cell(before.get(name, '–'))} | {_cell(after.get(name, '–'))} |")
    interval = evaluation.get("interval")
    if interval:
        how = f"paired bootstrap over the {interval['rows']} rows, {interval['resamples']} resamples"
        if interval.get("draws", 1) > 1 and "draws_df" in interval:
            how += (
                f", and the spread of {interval['draws']} synthesis-and-training draws as a t interval "
                f"({interval['draws_df']} degree{'s' if interval['draws_df'] != 1 else ''} of freedom)"
            )
        lines += [
            "",
            f"Delta {interval['delta']:+.2f}, {round(100 * interval['level'])} % interval {interval['low']:+.2f} to "
            f"{interval['high']:+.2f} ({how}).",
        ]
    return "\n".join(lines)


def _instruction(spec: TaskSpec) -> str:
    text = " ".join(spec.instruction.split())
    if len(text) > INSTRUCTION_PREVIEW_CHARS:
        text = text[:INSTRUCTION_PREVIEW_CHARS].rstrip() + " …"
    return text


def _task_fields(spec: TaskSpec) -> dict[str, str]:
    labels = f"\n- labels: {', '.join(f'`{label}`' for label in spec.labels)}" if spec.labels else ""
    return {
        "task": spec.name,
        "task_type": spec.type,
        "metric": spec.metric.replace("_", " "),
        "num_demos": str(len(spec.demonstrations)),
        "labels_line": labels,
        "instruction": _instruction(spec),
    }


def _license_text(license_id: str, base_model: str) -> str:
    if license_id == "other":
        return f"Same terms as the base model, [{base_model}]({_hub_url(base_model)})."
    return f"`{license_id}`, as the base model [{base_model}]({_hub_url(base_model)})."


METHOD_TEXT = {
    "lora": "LoRA adapter",
    "qlora": "QLoRA adapter (trained on the 4-bit NF4 base model)",
    "full": "full finetune",
}


SPEC_FILE = "selfguide_task.json"  # the task spec pushed beside the adapter (TaskSpec.load reads it)


def eval_results(info: CardInfo) -> list[Any]:
    """`model-index` results: the tuned and the few-shot score on the task's rows, and the delta's interval."""
    from huggingface_hub import EvalResult

    evaluation = info.evaluation or {}
    before, after = evaluation.get("before") or {}, evaluation.get("after") or {}
    if after.get("score") is None:
        return []
    metric = info.spec.metric
    common = {
        "task_type": "text-generation",
        "dataset_type": f"selfguide/{info.spec.name}",
        "dataset_name": f"{info.spec.name} ({evaluation.get('split', 'test')} rows)",
        "dataset_split": str(evaluation.get("split", "test")),
        "metric_type": metric,
    }
    results = [EvalResult(**common, metric_name=f"{metric} (self-guided)", metric_value=after["score"])]
    if before.get("score") is not None:
        results.append(
            EvalResult(**common, metric_name=f"{metric} (few-shot base)", metric_value=before["score"])
        )
    interval = evaluation.get("interval") or {}
    if interval.get("low") is not None and interval.get("high") is not None:
        delta = interval.get("delta", after["score"] - before.get("score", 0.0))
        results.append(
            EvalResult(
                **{**common, "metric_type": f"{metric}_delta"},
                metric_name=f"{metric} self-guided minus few-shot (95% CI {interval['low']:.1f} to {interval['high']:.1f})",
                metric_value=round(delta, 2),
            )
        )
    return results


def model_card(info: CardInfo) -> str:
    """README.md for the adapter repository: YAML header plus the model card text."""
    from huggingface_hub import ModelCardData

    tags = ["selfguide", "self-synthetic-data", "trl", "sft", info.spec.name]
    if info.method in ("lora", "qlora"):
        tags.append(info.method)
    data = ModelCardData(
        base_model=info.base_model if not info.base_model.startswith("/") else None,
        library_name="peft" if info.method in ("lora", "qlora") else "transformers",
        license=info.license,
        tags=tags,
        datasets=[info.dataset_hub_id] if info.dataset_hub_id else None,
        pipeline_tag="text-generation",
        model_name=info.repo_id.split("/")[-1] if info.repo_id else f"{info.spec.name}-selfguide",
        eval_results=eval_results(info) or None,
    )
    lora = info.manifest.get("lora")
    training = dict(info.training)
    if lora:
        training.update({f"lora_{k}": v for k, v in lora.items()})
    dataset_line = (
        f"Dataset: [{info.dataset_hub_id}]({_hub_url(info.dataset_hub_id, 'dataset')}), {info.num_rows} rows."
        if info.dataset_hub_id
        else f"{info.num_rows} synthetic rows."
        if info.num_rows is not None
        else ""
    )
    body = MODEL_CARD_TEMPLATE.substitute(
        title=f"{info.spec.name} self-guide {info.method} adapter for {info.base_model.split('/')[-1]}",
        method_text=METHOD_TEXT.get(info.method, info.method),
        base_model=info.base_model,
        base_model_url=_hub_url(info.base_model),
        base_model_note=f" ({info.base_model_note})" if info.base_model_note else "",
        paper_url=PAPER_URL,
        dataset_line=dataset_line,
        synthesis_table=synthesis_text(info.synthesis),
        funnel=funnel_text(info.funnel),
        training_table=table(training),
        evaluation=evaluation_text(info.evaluation),
        repo_hint=info.repo_id or "<this repository>",
        spec_file=SPEC_FILE,
        command=info.command or "accelerate launch recipes/sft.py --config <config> --task <task>",
        license_text=_license_text(info.license, info.base_model),
        citation=CITATION,
        **_task_fields(info.spec),
    )
    return _with_header(data, body)


def dataset_card(info: CardInfo) -> str:
    """README.md for the synthetic dataset repository."""
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        license=info.license,
        tags=["selfguide", "synthetic", info.spec.name],
        task_categories=["text-generation"],
        size_categories=[_size_category(info.num_rows or 0)],
    )
    body = DATASET_CARD_TEMPLATE.substitute(
        title=f"Self-guide synthetic data: {info.spec.name} by {info.base_model.split('/')[-1]}",
        generator=info.base_model,
        generator_note=f" ({info.base_model_note})" if info.base_model_note else "",
        generator_url=_hub_url(info.base_model),
        paper_url=PAPER_URL,
        num_rows=info.num_rows if info.num_rows is not None else "?",
        synthesis_table=synthesis_text(info.synthesis),
        funnel=funnel_text(info.funnel),
        command=info.command or "accelerate launch recipes/sft.py --config <config> --task <task>",
        license_text=_license_text(info.license, info.base_model),
        citation=CITATION,
        **_task_fields(info.spec),
    )
    return _with_header(data, body)


def _with_header(data: Any, body: str) -> str:
    """YAML metadata plus body, joined by hand: no template engine sees task text."""
    return f"---\n{data.to_yaml()}\n---\n{body}"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"
