"""The end-of-run report: baseline vs self-guided, and where the synthetic data went.

Written as `report.json` (for machines), `report.md` (for people and model
cards) and `report.png` (two panels: scores, synthesis funnel), and printed as
a table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfguide_hf.verdict import one_answer, paired_bootstrap, verdict_sentence, verdict_word

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"


def build_report(
    task: str,
    model: str,
    metric: str,
    baseline: dict[str, Any] | None,
    tuned: dict[str, Any] | None,
    funnel: dict[str, Any] | None = None,
    timings: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
    in_context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Collect the figures of one run; `baseline`, `tuned`, `in_context` are `EvalResult.summary()` dicts."""
    report: dict[str, Any] = {
        "task": task,
        "model": model,
        "metric": metric,
        "baseline": baseline,
        "self_guided": tuned,
        "funnel": funnel,
        "timings_min": {k: round(v / 60.0, 2) for k, v in (timings or {}).items()},
    }
    if extra:
        report.update(extra)
    if funnel and funnel.get("kept") is not None:
        report["training_pairs"] = funnel["kept"]
    if baseline and tuned:
        report["delta"] = round(tuned["score"] - baseline["score"], 2)
        if baseline.get("row_scores") and tuned.get("row_scores"):
            report["interval"] = paired_bootstrap(baseline["row_scores"], tuned["row_scores"])
            report["verdict"] = verdict_word(report["interval"])
            report["trivial_baseline"] = tuned.get("trivial_baseline") or baseline.get("trivial_baseline")
            if in_context and in_context.get(
                "row_scores"
            ):  # the synthetic pairs in the prompt, not the weights
                report["in_context"] = in_context
                report["in_context_interval"] = paired_bootstrap(
                    baseline["row_scores"], in_context["row_scores"]
                )
                report["self_guided_vs_in_context"] = paired_bootstrap(
                    in_context["row_scores"], tuned["row_scores"]
                )
            report["verdict_sentence"] = verdict_sentence(report)
    return report


def in_context_score(report: dict[str, Any]) -> float:
    """The in-context arm's score: the mean over the draws' pairs when the run has draws."""
    return (report.get("in_context_summary") or {}).get("mean", report["in_context"]["score"])


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) rows shared by the printed table and the markdown."""
    model = report["model"] + (f" ({report['model_note']})" if report.get("model_note") else "")
    rows = [("task", report["task"]), ("model", model)]
    if report.get("engine"):
        rows.append(("engine", report["engine"]))
    for key, name in (("baseline", "few-shot baseline"), ("self_guided", "self-guided")):
        result = report.get(key)
        if result:
            rows.append(
                (f"{name} {report['metric']}", f"{result['score']:.2f}  (n={result['num_examples']})")
            )
    if "delta" in report:
        interval = report.get("interval")
        detail = ""
        if interval:
            detail = f"  (95 % CI {interval['low']:+.2f} to {interval['high']:+.2f}: {report['verdict']})"
        rows.append(("delta", f"{report['delta']:+.2f}{detail}"))
    for key, name in (("baseline", "few-shot"), ("self_guided", "self-guided")):
        flagged = one_answer(report.get(key) or {})
        if flagged:
            rows.append((f"{name}: one answer", flagged))
    sides = report.get("trivial_sides")
    if sides:
        rows.append(
            (
                "vs the trivial baseline (row interval)",
                f"few-shot {sides['baseline']}, self-guided {sides['self_guided']}",
            )
        )
    arm, vs = report.get("in_context"), report.get("self_guided_vs_in_context")
    if arm and vs:
        rows.append(
            (f"synthetic pairs in context {report['metric']}", f"{in_context_score(report):.2f}  (self-guided {vs['delta']:+.2f}, "
             f"95 % CI {vs['low']:+.2f} to {vs['high']:+.2f}; {arm.get('served') or ''})")
        )  # fmt: skip
    served = (report.get("self_guided") or {}).get("served")
    if served:  # how vLLM ran the tuned model: the adapter on the base weights, or a merged copy
        rows.append(
            ("self-guided served by vLLM as", "LoRA on the base weights" if served == "lora" else served)
        )
    base = report.get("baseline") or report.get("self_guided") or {}
    if base.get("majority_rate") is not None:
        rows.append(("majority-class rate", f"{base['majority_rate']:.2f}  ({base['majority_label']})"))
    elif (base.get("trivial_baseline") or {}).get("name") == "copy-the-input":
        rows.append(("copy-the-input score", f"{base['trivial_baseline']['score']:.2f}"))
    for key, name in (("baseline", "few-shot"), ("self_guided", "self-guided")):
        result = report.get(key) or {}
        if result.get("label_share") is not None:
            among = result.get("label_exact_match")
            among_text = f", exact match among them {among:.2f}" if among is not None else ""
            rows.append((f"{name} answers that are labels", f"{result['label_share']:.1f} %{among_text}"))
        elif result.get("copy_share") is not None:
            rows.append((f"{name} answers copying the input", f"{result['copy_share']:.1f} %"))
        if result.get("failed_rows"):  # rows the engine could not answer (Ray keeps them), scored as empty
            rows.append((f"{name} rows failed in the engine", str(result["failed_rows"])))
        if result.get("no_answer_share") is not None:  # evaluated with reasoning: unreadable replies score 0
            rows.append((f"{name} replies with no Answer: line", f"{result['no_answer_share']:.1f} %"))
    funnel = report.get("funnel") or {}
    if funnel.get("raw_inputs") is not None:
        rows.append(
            ("synthetic pairs kept / raw inputs", f"{funnel.get('kept')} / {funnel.get('raw_inputs')}")
        )
        corpus = (funnel.get("notes") or {}).get("corpus")
        if corpus:  # the inputs came from the user's texts, not the model's imagination
            retriever = f", {corpus['retriever']}" if corpus.get("retriever") else ""
            rows.append(
                (
                    "inputs from corpus",
                    f"{corpus.get('name')} ({corpus.get('fingerprint')}), {corpus.get('mode')} mode"
                    f"{retriever}, {corpus.get('rows_used')} rows used",
                )
            )
    for stage, minutes in report.get("timings_min", {}).items():
        rows.append((f"time: {stage}", f"{minutes:.1f} min"))
    return rows


def format_table(report: dict[str, Any]) -> str:
    rows = summary_rows(report)
    width = max(len(what) for what, _ in rows)
    return "\n".join(f"{what.ljust(width)}  {value}" for what, value in rows)


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# SELF-GUIDE report: {report['task']}", ""]
    if report.get("verdict_sentence"):
        lines += [f"**{report['verdict_sentence']}.**", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {what} | {value} |" for what, value in summary_rows(report)]
    for key, name in (("baseline", "few-shot baseline"), ("self_guided", "self-guided")):
        counts = (report.get(key) or {}).get("prediction_counts")
        if counts:
            shown = ", ".join(f"{label!r}: {n}" for label, n in counts.items())
            lines += ["", f"Most frequent answers of the {name}: {shown}"]
    stages = funnel_stages(report.get("funnel"))
    if stages:
        lines += ["", "## Synthesis funnel", "", "| stage | dropped | left |", "|---|---:|---:|"]
        lines += [f"| {name} | {dropped} | {left} |" for name, dropped, left in stages]
    return "\n".join(lines) + "\n"


def funnel_stages(funnel: dict[str, Any] | None) -> list[tuple[str, int, int]]:
    """(stage, dropped, left) from a funnel dict (`Funnel.to_dict()`), raw inputs first."""
    if not funnel or funnel.get("raw_inputs") is None:
        return []
    left = int(funnel["raw_inputs"])
    stages = [("raw inputs", 0, left)]
    for name, dropped in (funnel.get("dropped") or {}).items():
        left -= int(dropped)
        stages.append((name, int(dropped), left))
    return stages


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Scores (baseline vs self-guided, majority rate dashed) beside the funnel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_scores, ax_funnel) = plt.subplots(1, 2, figsize=(10, 4))
    names, scores = [], []
    for key, name in (("baseline", "few-shot"), ("self_guided", "self-guided")):
        if report.get(key):
            names.append(name)
            scores.append(report[key]["score"])
    if report.get("draws_summary") and len(scores) == 2:  # several draws: their mean, as the interval's
        scores[1] = report["draws_summary"]["mean"]
        names[1] = f"self-guided ({len(report['draws'])} draws)"
    if report.get("in_context"):  # the third arm: the synthetic pairs in the prompt
        names.append("pairs in context")
        scores.append(in_context_score(report))
    ax_scores.bar(names, scores, color=["#999999", "#2a7ab9", "#7fb3d5"][: len(names)])
    interval = report.get("interval")
    if interval and len(scores) >= 2:  # the 95 % interval of the delta, drawn around the self-guided score
        base_score = scores[0]
        low, high = base_score + interval["low"], base_score + interval["high"]
        ax_scores.errorbar(
            [1], [scores[1]], yerr=[[scores[1] - low], [high - scores[1]]], color="black", capsize=6
        )
    trivial = report.get("trivial_baseline")
    if trivial:
        ax_scores.axhline(trivial["score"], linestyle="--", color="#c0392b", label=trivial["name"])
        ax_scores.legend(loc="lower right")
    ax_scores.set_ylim(0, 100)
    ax_scores.set_ylabel(report["metric"])
    ax_scores.set_title(f"{report['task']}: {report['metric']}")
    for x, y in enumerate(scores):
        ax_scores.text(x, y + 1, f"{y:.1f}", ha="center")
    stages = funnel_stages(report.get("funnel"))
    if stages:
        labels = [name for name, _, _ in stages]
        left = [remaining for _, _, remaining in stages]
        ax_funnel.barh(labels[::-1], left[::-1], color="#2a7ab9")
        ax_funnel.set_xlabel("inputs left")
        ax_funnel.set_title("synthesis funnel")
    else:
        ax_funnel.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """Write the JSON, markdown and PNG forms; returns their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / REPORT_JSON, "md": output_dir / REPORT_MD, "png": output_dir / REPORT_PNG}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(to_markdown(report), encoding="utf-8")
    plot_report(report, paths["png"])
    return paths
