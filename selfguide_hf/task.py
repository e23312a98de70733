"""Task specifications: what the model should get better at.

A `TaskSpec` is the only input SELF-GUIDE needs besides the model: an
instruction, a few demonstrations and, for classification, the label set.
It can come from a spec file (JSON or YAML), an original Natural Instructions
v2 task file, a bundled task name, or plain Python arguments. Every loader
validates, and every error names the file and the field at fault.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from selfguide_hf.errors import UserError
from selfguide_hf.labels import canonical_label, check_label_set

TaskType = Literal["classification", "generation"]
TASK_TYPES: tuple[str, ...] = ("classification", "generation")
METRIC_FOR_TYPE: dict[str, str] = {"classification": "exact_match", "generation": "rouge_l"}
METRICS: tuple[str, ...] = ("exact_match", "rouge_l")

# Strings that mark a generation that ran past one example into the next
# (the paper's per-task noise lists all contain these).
DEFAULT_NOISE_STRINGS: tuple[str, ...] = ("input", "output", "\n\n", "\\_\\_")

# An NI task is classification when its outputs come from a closed set this
# small that recurs across the instances.
MAX_LABELS = 10
MAX_LABEL_CHARS = 40

# A task name becomes a folder name (outputs/<task>): one path component, nothing that escapes.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

SPEC_FIELDS = frozenset(
    {"task", "name", "type", "metric", "instruction", "demonstrations", "labels", "noise_strings"}
)


class TaskSpecError(UserError):
    """A task spec that cannot be used; the message names the source and the field."""


@dataclass(frozen=True)
class Demonstration:
    """One worked example of the task."""

    input: str
    output: str


@dataclass(frozen=True)
class TaskSpec:
    """Everything SELF-GUIDE needs to know about a task."""

    name: str
    type: TaskType
    instruction: str
    demonstrations: tuple[Demonstration, ...]
    labels: tuple[str, ...] | None = None
    noise_strings: tuple[str, ...] = DEFAULT_NOISE_STRINGS
    metric: str = ""
    source: str = field(default="<python>", compare=False)

    def __post_init__(self) -> None:
        # Normalise containers so lists given from Python work too.
        object.__setattr__(self, "demonstrations", tuple(self.demonstrations))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "noise_strings", tuple(self.noise_strings))
        if not self.metric and self.type in METRIC_FOR_TYPE:
            object.__setattr__(self, "metric", METRIC_FOR_TYPE[self.type])
        self._validate()

    # ------------------------------------------------------------------ checks
    def _fail(self, field_name: str, problem: str) -> TaskSpecError:
        return TaskSpecError(f"{self.source}: field '{field_name}': {problem}")

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise self._fail("task", "must be a non-empty string")
        if not SAFE_NAME.fullmatch(self.name) or ".." in self.name:
            raise self._fail(
                "task",
                f"{self.name!r} is not a usable task name: it names the output folder, so it must be one "
                "path component of letters, digits, '.', '_' and '-' (e.g. 'my_task')",
            )
        if self.type not in TASK_TYPES:
            raise self._fail("type", f"must be one of {list(TASK_TYPES)}, got {self.type!r}")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise self._fail("instruction", "must be a non-empty string")
        if self.metric not in METRICS:
            raise self._fail("metric", f"must be one of {list(METRICS)}, got {self.metric!r}")
        if not self.demonstrations:
            raise self._fail("demonstrations", "at least one demonstration is needed")
        for i, demo in enumerate(self.demonstrations):
            if not isinstance(demo, Demonstration):
                raise self._fail(f"demonstrations[{i}]", "must be a Demonstration")
            for part in ("input", "output"):
                value = getattr(demo, part)
                if not isinstance(value, str):
                    raise self._fail(
                        f"demonstrations[{i}].{part}", f"must be a string, got {type(value).__name__}"
                    )
                if not value.strip():
                    raise self._fail(f"demonstrations[{i}].{part}", "is empty")
        for i, noise in enumerate(self.noise_strings):
            if not isinstance(noise, str) or not noise:
                raise self._fail(f"noise_strings[{i}]", "must be a non-empty string")
        if self.type == "classification":
            self._validate_labels()
        elif self.labels is not None:
            raise self._fail("labels", "only classification tasks have labels; use null")

    def _validate_labels(self) -> None:
        if not self.labels:
            raise self._fail("labels", "a classification task needs a non-empty label list")
        for i, label in enumerate(self.labels):
            if not isinstance(label, str) or not label.strip():
                raise self._fail(f"labels[{i}]", "must be a non-empty string")
        if len(self.labels) < 2:
            raise self._fail("labels", "a classification task needs at least two labels")
        try:
            check_label_set(self.labels)
        except ValueError as exc:
            raise self._fail("labels", str(exc)) from None
        for i, demo in enumerate(self.demonstrations):
            if canonical_label(demo.output, self.labels) is None:
                raise self._fail(
                    f"demonstrations[{i}].output",
                    f"{demo.output!r} is not one of the labels {list(self.labels)}",
                )

    # --------------------------------------------------------------- accessors
    @property
    def is_classification(self) -> bool:
        return self.type == "classification"

    def canonical_label(self, text: str) -> str | None:
        """The label ``text`` is (same text after `labels.normalize_answer`), spelled as in `labels`."""
        return canonical_label(text, self.labels) if self.labels else None

    def to_dict(self) -> dict[str, Any]:
        """The spec-file form (round-trips through `TaskSpec.from_dict`)."""
        return {
            "task": self.name,
            "type": self.type,
            "metric": self.metric,
            "instruction": self.instruction,
            "demonstrations": [{"input": d.input, "output": d.output} for d in self.demonstrations],
            "labels": list(self.labels) if self.labels is not None else None,
            "noise_strings": list(self.noise_strings),
        }

    def fingerprint(self) -> str:
        """A short stable hash of the content, used to key caches."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> TaskSpec:
        """Build from the spec-file layout (see `../shared/ni/*/spec.json`)."""
        if not isinstance(data, dict):
            raise TaskSpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        unknown = sorted(set(data) - SPEC_FIELDS)
        if unknown:
            raise TaskSpecError(
                f"{source}: unknown field(s) {unknown}; known fields are {sorted(SPEC_FIELDS)}"
            )
        name = data.get("task", data.get("name"))
        if name is None:
            name = safe_task_name(Path(source).stem) if source not in ("<dict>", "<python>") else None
        if not isinstance(name, str) or not name.strip():
            raise TaskSpecError(f"{source}: field 'task': must be a non-empty string")
        task_type = data.get("type")
        if task_type is None:
            task_type = "classification" if data.get("labels") else "generation"
        demos_raw = data.get("demonstrations")
        if demos_raw is None:
            raise TaskSpecError(f"{source}: field 'demonstrations': missing")
        if not isinstance(demos_raw, list):
            raise TaskSpecError(
                f"{source}: field 'demonstrations': must be a list, got {type(demos_raw).__name__}"
            )
        demos = [_demo_from_raw(raw, f"demonstrations[{i}]", source) for i, raw in enumerate(demos_raw)]
        labels = data.get("labels")
        if labels is not None and not isinstance(labels, list):
            raise TaskSpecError(
                f"{source}: field 'labels': must be a list or null, got {type(labels).__name__}"
            )
        if labels is not None:
            labels = [_as_text(v, f"labels[{i}]", source) for i, v in enumerate(labels)]
        noise = data.get("noise_strings", list(DEFAULT_NOISE_STRINGS))
        if not isinstance(noise, list):
            raise TaskSpecError(
                f"{source}: field 'noise_strings': must be a list, got {type(noise).__name__}"
            )
        instruction = data.get("instruction")
        if not isinstance(instruction, str):
            what = "missing" if instruction is None else f"must be a string, got {type(instruction).__name__}"
            raise TaskSpecError(f"{source}: field 'instruction': {what}")
        return cls(
            name=name,
            type=task_type,
            instruction=instruction.strip(),
            demonstrations=tuple(demos),
            labels=tuple(labels) if labels is not None else None,
            noise_strings=tuple(noise),
            metric=data.get("metric") or "",
            source=source,
        )

    @classmethod
    def from_spec_file(cls, path: str | os.PathLike[str]) -> TaskSpec:
        """Load a JSON or YAML spec file."""
        path = Path(path)
        data = _read_structured_file(path)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_ni_file(
        cls, path: str | os.PathLike[str], num_demonstrations: int = 3, name: str | None = None
    ) -> TaskSpec:
        """Build from an original Natural Instructions v2 task file.

        `Definition` becomes the instruction and the first `num_demonstrations`
        positive examples the demonstrations. The task is classification when
        the outputs of instances and examples come from a small closed set
        (at most 10 short strings, each seen about twice or more); that set,
        spelled as it occurs most often, is the label list.
        """
        path = Path(path)
        data = _read_structured_file(path)
        return cls.from_ni_dict(data, num_demonstrations=num_demonstrations, name=name, source=str(path))

    @classmethod
    def from_ni_dict(
        cls,
        data: Any,
        num_demonstrations: int = 3,
        name: str | None = None,
        source: str = "<ni>",
    ) -> TaskSpec:
        if not isinstance(data, dict):
            raise TaskSpecError(f"{source}: expected an NI task object at the top level")
        if num_demonstrations < 1:
            raise TaskSpecError(f"{source}: num_demonstrations must be >= 1, got {num_demonstrations}")
        definition = data.get("Definition")
        if isinstance(definition, list):
            definition = " ".join(str(part) for part in definition)
        if not isinstance(definition, str) or not definition.strip():
            raise TaskSpecError(f"{source}: field 'Definition': missing or empty")
        positives = data.get("Positive Examples")
        if not isinstance(positives, list) or not positives:
            raise TaskSpecError(f"{source}: field 'Positive Examples': missing or empty")
        demos = [
            _demo_from_raw(raw, f"Positive Examples[{i}]", source)
            for i, raw in enumerate(positives[:num_demonstrations])
        ]
        instances = data.get("Instances", [])
        if not isinstance(instances, list):
            raise TaskSpecError(f"{source}: field 'Instances': must be a list")
        outputs: list[str] = []
        for i, inst in enumerate(instances):
            out = inst.get("output") if isinstance(inst, dict) else None
            if isinstance(out, str):
                out = [out]
            if not isinstance(out, list):
                raise TaskSpecError(f"{source}: field 'Instances[{i}].output': must be a list of strings")
            outputs.extend(str(o) for o in out)
        outputs.extend(str(ex.get("output", "")) for ex in positives if isinstance(ex, dict))
        labels = infer_label_set(outputs)
        if name is None:
            name = safe_task_name(_ni_short_name(Path(source))) if source != "<ni>" else "ni_task"
        task_type: TaskType = "classification" if labels else "generation"
        if labels:
            # Demonstrations may use another casing than the majority spelling.
            canon = {label.lower(): label for label in labels}
            demos = [Demonstration(d.input, canon.get(d.output.strip().lower(), d.output)) for d in demos]
        return cls(
            name=name,
            type=task_type,
            instruction=definition.strip(),
            demonstrations=tuple(demos),
            labels=tuple(labels) if labels else None,
            noise_strings=DEFAULT_NOISE_STRINGS,
            source=source,
        )

    @classmethod
    def load(cls, source: str | os.PathLike[str] | TaskSpec, num_demonstrations: int = 3) -> TaskSpec:
        """A bundled task name, a spec file (JSON/YAML) or an NI v2 task file."""
        if isinstance(source, TaskSpec):
            return source
        text = os.fspath(source)
        path = Path(text)
        if path.is_file():
            data = _read_structured_file(path)
            if isinstance(data, dict) and "Definition" in data:
                return cls.from_ni_dict(data, num_demonstrations=num_demonstrations, source=str(path))
            return cls.from_dict(data, source=str(path))
        if path.suffix.lower() in (".json", ".yaml", ".yml") or os.sep in text:
            raise TaskSpecError(f"{text}: no such file")
        return bundled_spec(text)


def safe_task_name(stem: str) -> str:
    """A file name turned into a task name (unsafe characters become '_'), when the spec names none."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-").replace("..", "_")
    return name[:100] or "task"


def infer_label_set(outputs: list[str]) -> list[str] | None:
    """The closed label set behind `outputs`, or None when they look free-form.

    Labels are compared case-insensitively and spelled as they occur most often.
    """
    cleaned = [o.strip() for o in outputs if o and o.strip()]
    if not cleaned:
        return None
    by_key: dict[str, Counter[str]] = {}
    for out in cleaned:
        by_key.setdefault(out.lower(), Counter())[out] += 1
    if len(by_key) > MAX_LABELS or len(by_key) < 2:
        return None
    if any(len(key) > MAX_LABEL_CHARS for key in by_key):
        return None
    # A closed set recurs: on average every label is seen at least twice.
    if len(cleaned) < 2 * len(by_key):
        return None
    labels = [spellings.most_common(1)[0][0] for spellings in by_key.values()]
    return sorted(labels, key=lambda label: -sum(by_key[label.lower()].values()))


def _ni_short_name(path: Path) -> str:
    """ "task190_snli_classification.json" -> "task190"; a generic "task.json" takes its folder's name."""
    stem = path.stem
    if stem.lower() in ("task", "ni", "spec") and path.parent.name:
        stem = path.parent.name
    head = stem.split("_", 1)[0]
    return head if head.startswith("task") and head[4:].isdigit() else stem


def _as_text(value: Any, field_name: str, source: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TaskSpecError(f"{source}: field '{field_name}': must be a string, got {type(value).__name__}")
    return str(value)


def _demo_from_raw(raw: Any, field_name: str, source: str) -> Demonstration:
    if not isinstance(raw, dict):
        raise TaskSpecError(f"{source}: field '{field_name}': must be an object with input and output")
    for part in ("input", "output"):
        if part not in raw:
            raise TaskSpecError(f"{source}: field '{field_name}.{part}': missing")
        value = raw[part]
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str):
            raise TaskSpecError(
                f"{source}: field '{field_name}.{part}': must be a string, got {type(value).__name__}"
            )
        if not value.strip():
            raise TaskSpecError(f"{source}: field '{field_name}.{part}': is empty")
    out = raw["output"][0] if isinstance(raw["output"], list) else raw["output"]
    inp = raw["input"][0] if isinstance(raw["input"], list) else raw["input"]
    return Demonstration(input=inp.strip(), output=out.strip())


def _read_structured_file(path: Path) -> Any:
    if not path.is_file():
        raise TaskSpecError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskSpecError(f"{path}: cannot read file: {exc}") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TaskSpecError(f"{path}: malformed YAML: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskSpecError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc


# ------------------------------------------------------------- bundled tasks
# The spec files of the Natural Instructions tasks shipped in the package (their
# eval splits are in `selfguide_hf.bundled`). Here, so that `TaskSpec.load("task190")`
# needs no import from a module above this one.
def _tasks_dir() -> Path:
    return Path(str(resources.files("selfguide_hf") / "data" / "tasks"))


@lru_cache(maxsize=1)
def _index() -> tuple[dict, ...]:
    index_file = _tasks_dir() / "index.json"
    if not index_file.is_file():
        raise TaskSpecError(
            f"{index_file}: bundled task index missing; rebuild it with "
            "`python dataset_scripts/build_bundled_tasks.py`"
        )
    return tuple(json.loads(index_file.read_text(encoding="utf-8")))


def bundled_task_names() -> list[str]:
    """Names of the bundled tasks, e.g. ``task190``."""
    return [entry["task"] for entry in _index()]


def bundled_task_dir(name: str) -> Path:
    if name not in bundled_task_names():
        raise TaskSpecError(
            f"unknown bundled task {name!r}; known tasks: {', '.join(bundled_task_names())} "
            "(or pass a spec file or an NI task file path)"
        )
    return _tasks_dir() / name


@cache
def bundled_spec(name: str) -> TaskSpec:
    """The `TaskSpec` of a bundled task."""
    return TaskSpec.from_spec_file(bundled_task_dir(name) / "spec.json")
