"""The table of a many-task run: per task the verdict, interval, trivial baseline, format shares, pairs
kept and minutes; per group (classification, generation) the means and how many tasks improved.

Printed by `selfguide sweep` and written into docs/BENCHMARKS.md by `benchmarks/quality.py`.
"""

from __future__ import annotations

from typing import Any

from selfguide_hf.verdict import one_answer

__all__ = ["averages", "row_of", "sweep_table"]


def row_of(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of one task for the table."""
    if "error" in report:
        return {"task": report["task"], "error": report["error"], "minutes": round(report["minutes"], 1)}
    base, tuned = report.get("baseline") or {}, report.get("self_guided") or {}
    funnel = report.get("funnel") or {}
    interval = report.get("interval") or {}
    trivial = report.get("trivial_baseline") or {}
    share = "label_share" if base.get("label_share") is not None else "copy_share"
    return {
        "task": report["task"],
        "metric": report["metric"],
        "baseline": base.get("score"),
        "self_guided": (report.get("draws_summary") or {}).get("mean", tuned.get("score")),  # over the draws
        "delta": report.get("delta"),
        "low": interval.get("low"),
        "high": interval.get("high"),
        "verdict": report.get("verdict"),
        "trivial": trivial.get("score", base.get("majority_rate")),
        "trivial_name": trivial.get(
            "name", "majority-class" if base.get("majority_rate") is not None else None
        ),
        "share_kind": "labels" if share == "label_share" else "copies",
        "baseline_share": base.get(share),
        "self_guided_share": tuned.get(share),
        "majority_rate": base.get("majority_rate"),
        "num_eval": base.get("num_examples"),
        "kept": funnel.get("kept"),
        "raw": funnel.get("raw_inputs"),
        "minutes": round(report["minutes"], 1),
        "stage_minutes": report.get("timings_min", {}),
        # judged by the row interval of (arm - trivial rule) when the report has it (issue 24)
        "sides": report.get("trivial_sides"),
        "in_context": (report.get("in_context_summary") or {}).get(  # the mean over the draws' pairs
            "mean", (report.get("in_context") or {}).get("score")
        ),
        "vs_in_context": report.get(
            "self_guided_vs_in_context"
        ),  # the same pairs in the weights vs the prompt
        "draws": report.get("draws_summary")
        and {**report["draws_summary"], "n": len(report.get("draws") or [])},
        "one_answer": {k: one_answer(report.get(k) or {}) for k in ("baseline", "self_guided")},
    }


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def averages(rows: list[dict[str, Any]], metric: str) -> dict[str, float] | None:
    done = [r for r in rows if r.get("metric") == metric and r.get("self_guided") is not None]
    if not done:
        return None
    mean = lambda key: sum(r[key] for r in done) / len(done)  # noqa: E731
    out = {"tasks": len(done), "baseline": mean("baseline"), "self_guided": mean("self_guided")}
    out["delta"] = out["self_guided"] - out["baseline"]
    if all(r.get("trivial") is not None for r in done):
        out["trivial"] = mean("trivial")
    out["improved"] = sum(r.get("verdict") == "improved" for r in done)
    out["worse"] = sum(r.get("verdict") == "worse" for r in done)
    with_arm = [r for r in done if r.get("vs_in_context")]
    if with_arm:  # was finetuning worth it: self-guided against the same pairs in the prompt
        out["in_context"] = sum(r["in_context"] for r in with_arm) / len(with_arm)
        out["in_context_tasks"] = len(with_arm)
        out["beats_in_context"] = sum(r["vs_in_context"]["low"] > 0 for r in with_arm)
        out["loses_to_in_context"] = sum(r["vs_in_context"]["high"] < 0 for r in with_arm)
    out["above_trivial"] = sum(
        (r["sides"] or {}).get("self_guided") == "above"
        if r.get("sides")
        else r.get("trivial") is not None and r["self_guided"] > r["trivial"]
        for r in done
    )
    return out


def _versus(score: float | None, trivial: float | None) -> str:
    if score is None or trivial is None:
        return "-"
    return "above" if score > trivial else ("at" if score == trivial else "below")


def sweep_table(results: dict[str, Any]) -> str:
    """The markdown table of a sweep's results (`sweep.sweep`, `benchmarks/quality.py`)."""
    rows = results["rows"]
    lines = [
        f"`{results['command']}` — {results['date']}, {results['machine']}"
        + ("." if results.get("report_only") else f", load average at start {results['load_average']}."),
        "",
        "| task | metric | few-shot | self-guided | delta (95 % CI) | verdict | trivial baseline | "
        "few-shot / self-guided vs trivial | labels or copies, % (few-shot / self-guided) | pairs kept / raw | "
        "eval n | minutes |",
        "|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task']} | failed: {r['error']} | | | | | | | | | | {r['minutes']} |")
            continue
        interval = (
            f" ({_signed(r.get('low'))} to {_signed(r.get('high'))})" if r.get("low") is not None else ""
        )
        trivial = f"{_fmt(r.get('trivial'))} {r.get('trivial_name') or ''}".strip()
        sides = r.get("sides") or {}
        versus = (
            f"{sides['baseline']} / {sides['self_guided']}"
            if sides
            else f"{_versus(r['baseline'], r.get('trivial'))} / {_versus(r['self_guided'], r.get('trivial'))}"
        )
        flagged = [
            f"{name} {text}"
            for name, text in zip(("few-shot", "self-guided"), (r.get("one_answer") or {}).values())
            if text
        ]
        if flagged:
            versus += " (" + "; ".join(flagged) + ")"
        shares = (
            f"{r.get('share_kind', '')}: {_fmt(r.get('baseline_share'))} / {_fmt(r.get('self_guided_share'))}"
        )
        draws = r.get("draws")
        if draws:  # --draws N: the mean over the draws, their spread, and the interval over draws and rows
            interval += (
                f", {draws['n']} draws, sd {draws['sd']:.1f} ({_fmt(draws['min'])}–{_fmt(draws['max'])})"
            )
        verdict = r.get("verdict") or "-"
        if r.get("in_context") is not None:  # the third arm, for the reader to set beside self-guided
            verdict += f"; pairs in context {_fmt(r['in_context'])}"
            versus_ic = r.get("vs_in_context")
            if versus_ic:
                verdict += (
                    f" (self-guided {_signed(versus_ic['delta'])}, {_signed(versus_ic['low'])} to "
                    f"{_signed(versus_ic['high'])})"
                )
        lines.append(
            f"| {r['task']} | {r['metric']} | {_fmt(r['baseline'])} | {_fmt(r['self_guided'])} | "
            f"{_signed(r['delta'])}{interval} | {verdict} | {trivial} | {versus} | {shares} | "
            f"{r['kept']} / {r['raw']} | {r['num_eval']} | {r['minutes']} |"
        )
    for metric, avg in results["averages"].items():
        if avg:
            lines.append(
                f"| **mean of {avg['tasks']} ({metric})** | {metric} | {avg['baseline']:.1f} | "
                f"{avg['self_guided']:.1f} | {avg['delta']:+.1f} | {avg['improved']} improved, {avg['worse']} worse | "
                f"{_fmt(avg.get('trivial'))} | self-guided above it on {avg['above_trivial']} of {avg['tasks']} | | | | |"
            )
            if avg.get("in_context_tasks"):
                lines.append(
                    f"| *pairs in context, mean of {avg['in_context_tasks']}* | {metric} | | "
                    f"{avg['in_context']:.1f} | | self-guided above it on {avg['beats_in_context']}, below on "
                    f"{avg['loses_to_in_context']} (interval clear of zero) | | | | | | |"
                )
    return "\n".join(lines)
