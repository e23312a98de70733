"""Where the synthetic data went: raw inputs, what each filter dropped, what was kept.

SELF-GUIDE on a small model can silently end with almost nothing (the paper's
preset keeps 0 of 160 on task738 with SmolLM2-135M). The funnel makes that
visible: every drop has a named reason, and the report is printed as a table
and saved beside the data as JSON and as a PNG bar chart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FUNNEL_JSON", "FUNNEL_PNG", "STAGE_ORDER", "Funnel"]

FUNNEL_JSON = "funnel.json"
EXAMPLES_PER_REASON = 3  # dropped texts kept per reason, to see what a filter removes
FUNNEL_PNG = "funnel.png"

# Stages in pipeline order; a reason not listed here is shown after them.
ENGINE_FAILED = "engine:failed"  # a row the engine could not generate (kept as a failed row by Ray)
STAGE_ORDER: tuple[str, ...] = (
    ENGINE_FAILED,
    "input:truncated",
    "input:empty",
    "input:length",
    "input:noise",
    "input:chat_phrase",
    "input:format",
    "input:duplicate",
    "annotation:too_long",
    "annotation:empty",
    "annotation:noise",
    "annotation:chat_phrase",
    "annotation:length",
    "annotation:no_label",
    "annotation:ambiguous_label",
    "annotation:disagrees_with_drawn_label",
    "vote:min_frequency",
    "vote:low_confidence",
    "balance",
)


# Fewer surviving pairs (or a label with fewer than 2) stops a run before training; 1 trains anyway.
DEFAULT_MIN_PAIRS = 16


@dataclass
class Funnel:
    """Counts of inputs through the pipeline. ``raw - sum(dropped) == kept`` once finished."""

    task: str = ""
    raw: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    kept: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    # ------------------------------------------------------------ counting
    def drop(self, reason: str, count: int = 1, example: str | None = None) -> None:
        """Count ``count`` inputs dropped for ``reason``, keeping a few dropped texts as examples."""
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        kept = self.examples.setdefault(reason, []) if example is not None and count else None
        if kept is not None and len(kept) < EXAMPLES_PER_REASON:
            kept.append(example[:300])

    def merge(self, other: Funnel) -> None:
        """Add another funnel's counts and examples (one round's) into this one."""
        self.raw += other.raw
        for reason, count in other.dropped.items():
            self.drop(reason, count)
        for reason, texts in other.examples.items():
            room = EXAMPLES_PER_REASON - len(self.examples.setdefault(reason, []))
            self.examples[reason].extend(texts[: max(room, 0)])

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def yield_rate(self) -> float:
        """Kept / raw inputs."""
        return self.kept / self.raw if self.raw else 0.0

    def ordered_stages(self) -> list[tuple[str, int]]:
        known = [(s, self.dropped[s]) for s in STAGE_ORDER if s in self.dropped]
        other = [(s, c) for s, c in self.dropped.items() if s not in STAGE_ORDER]
        return known + other

    # ---------------------------------------------------------- conversion
    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "raw_inputs": self.raw,
            "dropped": dict(self.ordered_stages()),
            "kept": self.kept,
            "yield": round(self.yield_rate, 4),
            "classes": dict(self.classes),
            "notes": dict(self.notes),
            "examples": {k: list(v) for k, v in self.examples.items() if v},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Funnel:
        return cls(
            task=data.get("task", ""),
            raw=int(data.get("raw_inputs", 0)),
            dropped={k: int(v) for k, v in data.get("dropped", {}).items()},
            kept=int(data.get("kept", 0)),
            classes={k: int(v) for k, v in data.get("classes", {}).items()},
            notes=dict(data.get("notes", {})),
            examples={k: list(v) for k, v in data.get("examples", {}).items()},
        )

    # ------------------------------------------------------------- reports
    def format_table(self) -> str:
        """A plain-text table: each stage with what it dropped and what remains."""
        width = max([len("raw inputs"), *(len(s) for s in self.dropped)]) + 2
        lines = [
            f"SELF-GUIDE funnel{f' ({self.task})' if self.task else ''}",
            f"{'stage':<{width}}{'dropped':>9}{'remaining':>11}",
            f"{'raw inputs':<{width}}{'':>9}{self.raw:>11}",
        ]
        remaining = self.raw
        for stage, count in self.ordered_stages():
            remaining -= count
            lines.append(f"{stage:<{width}}{count:>9}{remaining:>11}")
        lines.append(f"{'kept':<{width}}{'':>9}{self.kept:>11}  ({100 * self.yield_rate:.1f} % of raw)")
        if self.classes:
            lines.append("classes kept: " + ", ".join(f"{k}={v}" for k, v in self.classes.items()))
        return "\n".join(lines)

    def save(self, directory: str | os.PathLike[str]) -> tuple[Path, Path | None]:
        """Write ``funnel.json`` and ``funnel.png`` into ``directory``; the PNG is skipped without matplotlib."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_path = directory / FUNNEL_JSON
        json_path.write_text(
            json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        png_path = directory / FUNNEL_PNG
        return json_path, (png_path if self.save_png(png_path) else None)

    def save_png(self, path: str | os.PathLike[str]) -> bool:
        """A horizontal bar chart: raw, each stage's drops, kept. False when matplotlib is missing."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError:
            return False
        stages = self.ordered_stages()
        names = ["raw inputs", *(s for s, _ in stages), "kept"]
        values = [self.raw, *(c for _, c in stages), self.kept]
        colors = ["#4c72b0", *(["#c44e52"] * len(stages)), "#55a868"]
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
        try:
            bars = ax.barh(range(len(names)), values, color=colors)
            ax.set_yticks(range(len(names)), labels=names)
            ax.invert_yaxis()
            ax.bar_label(bars, padding=3)
            ax.set_xlabel("inputs")
            title = f"SELF-GUIDE funnel {self.task}".strip()
            ax.set_title(f"{title}: kept {self.kept} of {self.raw} ({100 * self.yield_rate:.1f} %)")
            ax.set_xlim(0, max([*values, 1]) * 1.15)
            fig.tight_layout()
            fig.savefig(os.fspath(path), dpi=100)
        finally:
            plt.close(fig)
        return True


def shortfall(
    outputs: list[str], labels: tuple[str, ...] | None, min_pairs: int, funnel: dict[str, Any] | None
) -> str | None:
    """Why a synthetic set is too small to train on (None when it is not): counts and the two largest drops.

    Too small: fewer than ``min_pairs`` rows, or (classification) a label with
    fewer than 2 examples; ``min_pairs`` 1 accepts anything that survived.
    """
    problems = []
    kept = len(outputs)
    if kept < min_pairs:
        problems.append(f"only {kept} synthetic pair{'s' if kept != 1 else ''} survived")
    if labels and kept and min_pairs > 1:  # min_pairs 1: train on whatever survived
        counts = {label: 0 for label in labels}
        for output in outputs:
            counts[output] = counts.get(output, 0) + 1
        thin = [f"{label!r}: {n}" for label, n in counts.items() if n < 2]
        if thin:
            problems.append(f"label(s) with fewer than 2 examples ({', '.join(thin)})")
    if not problems:
        return None
    funnel = funnel or {}
    drops = sorted((funnel.get("dropped") or {}).items(), key=lambda kv: -int(kv[1]))[:2]
    dropped = ", ".join(f"{reason} {count}" for reason, count in drops) or "none recorded"
    raw = funnel.get("raw_inputs", "?")
    return f"{' and '.join(problems)} of {raw} raw inputs (min pairs {min_pairs}); largest drops: {dropped}"


def more_inputs_advice(
    flag: Callable[[str], str],
    raw: Any,
    kept: int,
    dropped: dict[str, Any],
    min_pairs: int,
    corpus: dict[str, Any] | None = None,
) -> str:
    """What to try after too few pairs, from the yield the run measured: the raw inputs it needs
    (``flag`` spells a setting as the user's front does), and the filter at fault. With a
    ``corpus`` (the funnel's note on it), more inputs cannot help once every corpus row is used."""
    if corpus:
        return (
            f"more rows in the corpus {corpus.get('name')} (it gave {corpus.get('rows_used')}; "
            f"{flag('num_inputs')} caps how many are used), no corpus (the model writes the inputs)"
        )
    corpus_hint = f"real inputs from your own texts ({flag('corpus')} FILE)"
    if not isinstance(raw, int) or raw <= 0:
        return f"more {flag('num_inputs')} (the synthetic data so far stays cached), {corpus_hint}"
    format_drops = int(dropped.get("input:format", 0))
    if format_drops >= raw / 2:  # most generated inputs are not in the task's format: more of them won't be
        corpus_hint = (
            f"{corpus_hint}, the likelier fix: the format filter dropped {format_drops} of {raw} generated "
            "inputs (they lack the demonstrations' field markers)"
        )
    if kept == 0:
        return f"{corpus_hint}; more {flag('num_inputs')} cannot help while no input gets through"
    need = -(-raw * min_pairs // kept)  # ceil: the measured yield, kept of raw
    return (
        f"{flag('num_inputs')} {need} (at this run's yield, {kept} pairs from {raw} raw inputs, "
        f"that many give about {min_pairs}; the synthetic data so far stays cached), {corpus_hint}"
    )
