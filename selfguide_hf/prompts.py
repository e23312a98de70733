"""Every prompt the pipeline renders, in one place.

Training and evaluation both call `render_task_prompt`, so the format a model
is finetuned on can never drift from the one it is scored with. Prompts are
returned as strings already rendered for the tokenizer: with its chat template
when it has one, otherwise in a plain "Input:/Output:" format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from selfguide_hf.task import TaskSpec

Message = dict[str, str]

PLAIN_INPUT = "Input:"
PLAIN_OUTPUT = "Output:"
# Where a plain-format answer has run into the next example.
PLAIN_STOP_STRINGS: tuple[str, ...] = ("\nInput:", "\n\nInput")
# Chain of thought (ReBase): reasoning first, then the answer on a line of its own.
ANSWER_MARKER = "Answer:"
REASONING_MAX_NEW_TOKENS = 256  # new tokens for a reasoned reply (annotation's default, evaluation's budget)
REASONING_REQUEST = (
    f"Think step by step, then give the final answer on a last line that starts with {ANSWER_MARKER!r}."
)
_ANSWER_LINE = re.compile(
    r"(?:^|\n)[ \t*#>_-]*(?:the\s+)?(?:final\s+)?answer\s*(?:is)?\s*[:：]", re.IGNORECASE
)


def extract_final_answer(text: str) -> str | None:
    """The answer after the last ``Answer:`` line of a reasoned reply, or None when it gives none.

    Annotation votes over these answers and evaluation scores them, so both read
    a reasoned reply the same way. Markdown emphasis around the answer is dropped.
    """
    matches = list(_ANSWER_LINE.finditer(text))
    if not matches:
        return None
    answer = text[matches[-1].end() :]
    while True:  # "Answer: Answer: yes" (small models repeat the marker): the answer is "yes"
        answer = answer.strip().strip("*_").strip()
        repeated = _ANSWER_LINE.match(answer)
        if repeated is None:
            return answer or None
        answer = answer[repeated.end() :]


def split_reasoning(text: str) -> str:
    """The reasoning of a reasoned reply: everything before its last ``Answer:`` line."""
    matches = list(_ANSWER_LINE.finditer(text))
    return (text[: matches[-1].start()] if matches else text).strip()


def reasoning_target(reasoning: str, answer: str) -> str:
    """The training target of a model taught to reason: the reasoning, then the answer line."""
    return (
        f"{reasoning.strip()}\n{ANSWER_MARKER} {answer}" if reasoning.strip() else f"{ANSWER_MARKER} {answer}"
    )


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS first when it encodes text with its defaults (Llama, Vicuna)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def _plain(text: str, tokenizer: Any) -> str:
    """A plain-format prompt, opening with the BOS token text where the model was trained with BOS.

    Every prompt is encoded without special tokens (the generation engine, label
    scoring and training alike), so BOS must be in the text: a chat template
    writes it itself, the plain format gets it here.
    """
    return f"{tokenizer.bos_token}{text}" if adds_bos(tokenizer) else text


# ---------------------------------------------------------------- task prompt
def task_messages(
    spec: TaskSpec, text: str, output: str | None = None, reasoning: bool = False
) -> list[Message]:
    """Instruction, demonstrations as user/assistant turns, then the new input (asking for reasoning)."""
    messages: list[Message] = []
    for i, demo in enumerate(spec.demonstrations):
        content = f"{spec.instruction}\n\n{demo.input}" if i == 0 else demo.input
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": demo.output})
    messages.append({"role": "user", "content": f"{text}\n\n{REASONING_REQUEST}" if reasoning else text})
    if output is not None:
        messages.append({"role": "assistant", "content": output})
    return messages


def _plain_task_prompt(spec: TaskSpec, text: str, reasoning: bool = False) -> str:
    parts = [spec.instruction, ""]
    for demo in spec.demonstrations:
        parts += [f"{PLAIN_INPUT} {demo.input}", f"{PLAIN_OUTPUT} {demo.output}", ""]
    parts += [f"{PLAIN_INPUT} {text}", *([REASONING_REQUEST] if reasoning else []), PLAIN_OUTPUT]
    return "\n".join(parts)


def render_task_prompt(spec: TaskSpec, text: str, tokenizer: Any, reasoning: bool = False) -> str:
    """The prompt a model answers `text` from, for training and evaluation alike.

    ``reasoning`` asks for step-by-step reasoning ending in an ``Answer:`` line
    (chain-of-thought annotation, and models trained on reasoning).
    """
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            task_messages(spec, text, reasoning=reasoning), tokenize=False, add_generation_prompt=True
        )
    return _plain(_plain_task_prompt(spec, text, reasoning), tokenizer)


def render_completion(spec: TaskSpec, text: str, output: str, tokenizer: Any, reasoning: bool = False) -> str:
    """What follows the task prompt when the answer is `output`, end-of-turn included.

    Taken from the chat template itself (full conversation minus the prompt),
    so the model learns to close its turn exactly as the template expects.
    """
    eos = tokenizer.eos_token or ""
    if not has_chat_template(tokenizer):
        return f" {output}{eos}"
    prompt = render_task_prompt(spec, text, tokenizer, reasoning)
    full = tokenizer.apply_chat_template(task_messages(spec, text, output, reasoning), tokenize=False)
    if full.startswith(prompt) and output in full[len(prompt) :]:
        return full[len(prompt) :]
    return f"{output}{eos}"  # a template that re-renders earlier turns: fall back to eos


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a rendered prompt, exactly as the generation engine encodes it (no special tokens)."""
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def encode_training_example(
    spec: TaskSpec, text: str, output: str, tokenizer: Any, reasoning: str | None = None
) -> dict[str, list[int]]:
    """``input_ids`` and ``completion_mask`` of one training row for `SFTTrainer`.

    The prompt's ids are `encode_prompt` of `render_task_prompt`, the very ids
    evaluation generates from, and the completion (answer plus end of turn) is
    encoded on its own and appended, so no token merges across the boundary and
    the mask covers the answer and the end of turn only. TRL would tokenize a
    string prompt with the tokenizer's defaults (adding a second BOS after a
    template that writes one), which is why rows reach it tokenized. With
    ``reasoning``, the prompt asks for reasoning and the target is the
    reasoning followed by the ``Answer:`` line.
    """
    think = bool(reasoning)
    target = reasoning_target(reasoning, output) if think else output
    prompt_ids = encode_prompt(tokenizer, render_task_prompt(spec, text, tokenizer, think))
    completion_ids = list(
        tokenizer(render_completion(spec, text, target, tokenizer, think), add_special_tokens=False)[
            "input_ids"
        ]
    )
    return {
        "input_ids": prompt_ids + completion_ids,
        "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
    }


def label_continuations(spec: TaskSpec, tokenizer: Any) -> list[str]:
    """Each label as the text that follows the task prompt (e.g. " E" in the plain format).

    Scoring these after the task prompt is how a label is chosen by likelihood:
    the same template that renders training completions, cut right after the label.
    """
    probe = spec.demonstrations[0].input
    choices = []
    for label in spec.labels or ():
        completion = render_completion(spec, probe, label, tokenizer)
        end = completion.find(label)
        choices.append(completion[: end + len(label)] if end >= 0 else label)
    return choices


def stop_strings(tokenizer: Any) -> list[str]:
    """Stop strings for task answers (the chat template's end-of-turn ends them anyway)."""
    return [] if has_chat_template(tokenizer) else list(PLAIN_STOP_STRINGS)


# ------------------------------------------------------ input generation prompt
def _task_and_examples(spec: TaskSpec, examples: Sequence[str]) -> list[str]:
    lines = [
        "You write inputs for a task. Here is the task instruction:",
        "",
        spec.instruction,
        "",
        "Example inputs:",
    ]
    for i, example in enumerate(examples, 1):
        lines += ["", f"Example {i}:", example]
    return lines


def _request_prompt(message: str, tokenizer: Any) -> str:
    """A request for one new input, as a user turn (chat template) or in the plain format."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
    return _plain(f"{message}\n\nNew input:", tokenizer)


def input_generation_message(spec: TaskSpec, examples: Sequence[str], label: str | None = None) -> str:
    """Ask for one new task input, shown the instruction and example inputs.

    For classification a target label is named to spread the classes; it is
    not kept: the input is annotated afterwards like any other.
    """
    lines = _task_and_examples(spec, examples)
    lines.append("")
    request = "Write one new input for this task, different from the examples"
    if label is not None:
        request += f', whose correct answer is "{label}"'
    request += ". Use the same format as the examples. Reply with the new input only."
    lines.append(request)
    return "\n".join(lines)


def render_input_generation_prompt(
    spec: TaskSpec, examples: Sequence[str], tokenizer: Any, label: str | None = None
) -> str:
    return _request_prompt(input_generation_message(spec, examples, label), tokenizer)


def rewrite_message(spec: TaskSpec, examples: Sequence[str], source: str) -> str:
    """Ask for one new task input made from a text of the user's corpus (ReBase's rewrite step)."""
    lines = _task_and_examples(spec, examples)
    lines += [
        "",
        "Here is a text from another source:",
        "",
        source,
        "",
        "Rewrite it into one new input for this task, using its content and the same format as the "
        "examples. Reply with the new input only.",
    ]
    return "\n".join(lines)


def render_rewrite_prompt(spec: TaskSpec, examples: Sequence[str], source: str, tokenizer: Any) -> str:
    return _request_prompt(rewrite_message(spec, examples, source), tokenizer)


def input_generation_stop_strings(tokenizer: Any) -> list[str]:
    return [] if has_chat_template(tokenizer) else ["\nExample", "\n\n\n"]
