"""Build a tiny causal LM offline: a BPE tokenizer trained locally plus a random Llama.

Seconds to build, a few hundred kB on disk; exercises the real transformers,
PEFT and TRL code paths without any download.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
# A Llama-3-style template: it writes BOS itself, and the tokenizer adds BOS by default too.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_TOKENS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def _training_corpus() -> list[str]:
    """Text with the vocabulary of the bundled tasks, so tokenization is realistic."""
    from selfguide_hf.bundled import bundled_spec, bundled_task_names

    texts = []
    for name in bundled_task_names():
        spec = bundled_spec(name)
        texts.append(spec.instruction)
        for demo in spec.demonstrations:
            texts += [demo.input, demo.output]
        texts += list(spec.labels or ())
    texts += ["Input: Output: Example new input task answer", "user assistant system"]
    return texts


def build_tiny_model(
    out_dir: Path,
    chat_template: bool = True,
    vocab_size: int = 600,
    pad_token: bool = True,
    varied_outputs: bool = False,
    bos: str | None = None,
    num_heads: int = 4,
) -> Path:
    """``bos``: None (ChatML, no BOS added), ``"llama3"`` (Llama-3-style template, BOS added by the
    tokenizer too) or ``"plain"`` (no chat template, BOS added: Vicuna-like)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + (LLAMA3_TOKENS if bos else []),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_corpus(), trainer=trainer)
    if bos:
        bos_id = bpe.token_to_id("<|begin_of_text|>")
        bpe.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", bos_id)],
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|begin_of_text|>" if bos else "<|im_start|>",
        eos_token="<|eot_id|>" if bos == "llama3" else "<|im_end|>",
        pad_token="<pad>" if pad_token else None,
        unk_token="<|endoftext|>",
    )
    if bos == "llama3":
        tokenizer.chat_template = LLAMA3_TEMPLATE
    elif chat_template and bos is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # varied_outputs: untied, with a wider init. A tied tiny model echoes its last
        # token, so greedy outputs would be the same for every prompt.
        tie_word_embeddings=not varied_outputs,
        initializer_range=0.2 if varied_outputs else 0.02,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out_dir))
    (out_dir / "TINY_MODEL.json").write_text(json.dumps({"random_init": True}) + "\n")
    return out_dir
