"""Prompts: train and eval share one format; chat template and plain fallback."""

from __future__ import annotations

from transformers import AutoTokenizer

from selfguide_hf.prompts import (
    render_completion,
    render_input_generation_prompt,
    render_task_prompt,
    stop_strings,
    task_messages,
)
from selfguide_hf.task import TaskSpec


def test_task_messages_alternate_and_end_with_input():
    spec = TaskSpec.load("task190")
    messages = task_messages(spec, "NEW INPUT")
    assert [m["role"] for m in messages] == ["user", "assistant"] * len(spec.demonstrations) + ["user"]
    assert messages[0]["content"].startswith(spec.instruction)
    assert messages[-1]["content"] == "NEW INPUT"
    assert "None" not in "".join(m["content"] for m in messages)  # the reference code's stray "None"


def test_chat_prompt_plus_completion_is_the_whole_conversation(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    spec = TaskSpec.load("task738")
    prompt = render_task_prompt(spec, "claim: a\nperspective: b", tokenizer)
    completion = render_completion(spec, "claim: a\nperspective: b", "support", tokenizer)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert completion == "support<|im_end|>\n"
    full = tokenizer.apply_chat_template(
        task_messages(spec, "claim: a\nperspective: b", "support"), tokenize=False
    )
    assert prompt + completion == full
    assert stop_strings(tokenizer) == []


def test_plain_format_without_chat_template(tiny_plain_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_plain_model_dir)
    spec = TaskSpec.load("task199")
    prompt = render_task_prompt(spec, "Premise: x", tokenizer)
    assert prompt.startswith(spec.instruction) and prompt.endswith("Input: Premise: x\nOutput:")
    assert render_completion(spec, "Premise: x", "yes", tokenizer) == " yes" + tokenizer.eos_token
    assert "\nInput:" in stop_strings(tokenizer)


def test_input_generation_prompt_names_label_only_when_given(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    spec = TaskSpec.load("task738")
    examples = [d.input for d in spec.demonstrations]
    with_label = render_input_generation_prompt(spec, examples, tokenizer, label="undermine")
    without = render_input_generation_prompt(spec, examples, tokenizer)
    assert '"undermine"' in with_label and '"undermine"' not in without
    assert all(example in without for example in examples)
