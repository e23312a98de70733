"""`RayEngine`: the `GenerationEngine` contract on vLLM replicas in a Ray cluster, one machine or many.

Two backends, the same answers (those of `VLLMEngine`):

* ``replicas`` (default, `ray_replicas.VLLMReplicas`): ``replicas`` vLLM
  engines as Ray actors that stay up for the stage; each call's prompts are
  split among them. A stage makes many small calls (two per synthesis round),
  so an engine start per call would dominate.
* ``data``: each call is one Ray Dataset of token-id rows sent through Ray
  Data LLM's vLLM processor (``build_processor``), ``replicas`` replicas each
  ``tensor_parallel_size`` devices wide. Ray Data starts the replicas for
  every dataset it runs and stops them after: 44 s per call for the embedded
  model on this 2-core machine (docs/BENCHMARKS.md). For a few large calls
  (an evaluation of many rows), with Ray Data's streaming and actor restarts.
  Prompts go in as ``tokenized_prompt`` (Ray's chat-template, tokenize and
  detokenize stages off) and completions come back as token ids, decoded by
  `generation.decode_completion`; ``n`` samples are ``n`` rows (Ray's stage
  returns one completion per row); label scores use the forced-choice steps
  of `VLLMEngine.score_choices`, every step of every prompt in one dataset; a
  LoRA adapter is named per row (``model`` = its folder).

A row that fails (a prompt longer than the context, say) does not fail the
call: its completions are `FailedCompletion`s carrying the reason (``data``:
``should_continue_on_error``), which the synthesis funnel counts under
``engine:failed`` and the evaluation scores as an empty answer.
"""

from __future__ import annotations

import logging
from typing import Any

from selfguide_hf.generation import (
    FailedCompletion,
    SamplingParams,
    _check_prompts,
    _check_scoring_inputs,
    _common_prefix_len,
    decode_completion,
    eos_token_ids,
)
from selfguide_hf.ray_cluster import (
    PROCESSING_SLOTS,
    RAY_BACKENDS,
    quiet_ray_loggers,
    ray_available,
    start_ray,
)
from selfguide_hf.ray_replicas import VLLMReplicas
from selfguide_hf.vllm_setup import on_cpu, served_lora_rank

logger = logging.getLogger(__name__)

__all__ = ["RAY_BACKENDS", "RayEngine", "ray_available"]

INDEX = "selfguide_index"  # our row id: Ray returns rows in any order
CPU_KV_CACHE_GB = 1.0  # per replica on a CPU


class RayEngine:
    """A :class:`~selfguide_hf.generation.GenerationEngine` over vLLM replicas on Ray (``backend``:
    actors that stay up, or Ray Data LLM's processor per call; see the module docstring).

    ``replicas`` engine replicas share each call's rows; ``address`` is a Ray
    cluster (``ray://host:10001`` or ``auto``; default: a local cluster);
    ``threads`` the CPU cores of one replica on a CPU (default: this machine's
    cores divided among the replicas). Other arguments as in `VLLMEngine`.
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
        replicas: int = 1,
        address: str | None = None,
        batch_size: int = 64,
        backend: str = "replicas",
    ) -> None:
        if backend not in RAY_BACKENDS:
            raise ValueError(f"Ray backend must be one of {list(RAY_BACKENDS)}, got {backend!r}")
        if replicas < 1 or tensor_parallel_size < 1:
            raise ValueError(
                f"replicas and tensor_parallel_size must be >= 1, got {replicas}, {tensor_parallel_size}"
            )
        self.tokenizer = tokenizer
        self.model_path = str(model_path)
        self.show_progress = show_progress
        self.cpu = on_cpu() if address is None else _cluster_has_no_gpu(address)
        self.replicas = replicas
        self.eos_token_ids = eos_token_ids(model_path, tokenizer)
        self._lora_paths = [str(p) for p in (lora_paths or ([lora_path] if lora_path else []))]
        self.lora: str | None = None  # the adapter every request is served with (None: the base model)
        self.failures: list[str] = []  # reasons of the rows that failed in the last call
        ray = start_ray(address)
        engine_kwargs: dict[str, Any] = {
            "dtype": dtype,
            "seed": seed,
            "enable_prefix_caching": True,
            "tensor_parallel_size": tensor_parallel_size,
        }
        if max_model_len is not None:
            engine_kwargs["max_model_len"] = max_model_len
        if self._lora_paths:
            rank = max(served_lora_rank(path) for path in self._lora_paths)
            engine_kwargs.update(enable_lora=True, max_loras=len(self._lora_paths), max_lora_rank=rank)
        env = {"VLLM_CONFIGURE_LOGGING": "0", "TOKENIZERS_PARALLELISM": "false"}
        if self.cpu:
            slots = 0 if address else PROCESSING_SLOTS  # the local cluster's room for Ray Data's row tasks
            cores = int(ray.cluster_resources().get("CPU", 1)) - slots
            self.threads = threads or max(1, cores // (replicas * tensor_parallel_size))
            # the data backend's replica asks Ray for one CPU and computes on `threads`: its row tasks
            # then always find a CPU, whatever else holds the cluster's
            need = (self.threads if backend == "replicas" else 1) * replicas * tensor_parallel_size
            reserve = 1 if backend == "data" and not address else 0  # a CPU for Ray Data's row tasks
            free = _free_cpus(ray, need + reserve) - reserve
            if address is None and need > free:  # Ray would wait for them forever
                raise ValueError(
                    f"{replicas} replica(s) of {self.threads} CPU(s) need {need} CPUs; this machine has "
                    f"{max(free, 0)} free: lower --ray-replicas (or give --ray-address a larger cluster)"
                )
            engine_kwargs.update(enforce_eager=True, block_size=32)
            engine_kwargs["kv_cache_memory_bytes"] = int((kv_cache_gb or CPU_KV_CACHE_GB) * (1 << 30))
            env.update(VLLM_CPU_OMP_THREADS_BIND="nobind", OMP_NUM_THREADS=str(self.threads))
            bundle: dict[str, float] = {"CPU": 1}
        else:
            self.threads = None
            if kv_cache_gb is not None:
                engine_kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * (1 << 30))
            bundle = {"GPU": 1, "CPU": 1}
        self.engine_kwargs = engine_kwargs
        self.backend = backend
        self._replicas: VLLMReplicas | None = None
        if backend == "replicas":  # engines that stay up for the stage (ray_replicas.py)
            options: dict[str, Any] = {
                "dtype": dtype,
                "seed": seed,
                "tensor_parallel_size": tensor_parallel_size,
            }
            options.update(
                max_model_len=max_model_len, kv_cache_gb=kv_cache_gb, lora_paths=self._lora_paths or None
            )
            if self.cpu:
                options["threads"] = self.threads
                resources = {"num_cpus": self.threads * tensor_parallel_size}
            else:
                resources = {"num_gpus": tensor_parallel_size}
            context = max_model_len or _model_context(self.model_path)
            self._replicas = VLLMReplicas(
                ray, self.model_path, tokenizer, options, replicas, resources, context
            )
        self._config_kwargs = {
            "model_source": self.model_path,
            "engine_kwargs": engine_kwargs,
            "concurrency": replicas,
            "batch_size": batch_size,
            "chat_template_stage": False,
            "tokenize_stage": False,
            "detokenize_stage": False,
            "should_continue_on_error": True,
            "runtime_env": {"env_vars": env},
            "placement_group_config": {"bundles": [dict(bundle) for _ in range(tensor_parallel_size)]},
        }
        if self._lora_paths:
            self.use_adapter(True)

    def use_adapter(self, which: bool | str) -> None:
        """Serve the next requests with one of the engine's LoRA adapters (``True``: the first; a path:
        that one) or, with ``False``, with the base model alone."""
        if which is False:
            self.lora = None
            return
        path = self._lora_paths[0] if which is True and self._lora_paths else str(which)
        if path not in self._lora_paths:
            raise ValueError(f"this Ray engine was not started with the LoRA adapter {path}")
        self.lora = path

    def close(self) -> None:
        """Stop the replicas (backend "replicas"; Ray Data stops its own after each call); the cluster
        stays up."""
        if self._replicas is not None:
            self._replicas.close()
            self._replicas = None

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ one dataset
    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _run(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send rows (``tokenized_prompt``, ``sampling_params``) through the processor; results in row order."""
        import ray.data
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig

        for i, row in enumerate(rows):
            row[INDEX] = i
            if self.lora is not None:
                row["model"] = self.lora
        processor = build_processor(vLLMEngineProcessorConfig(**self._config_kwargs))
        quiet_ray_loggers()
        blocks = max(1, min(len(rows), self.replicas * 4))
        dataset = ray.data.from_items(rows, override_num_blocks=blocks)
        columns = [INDEX, "generated_tokens", "logprobs", "__inference_error__"]
        out = processor(dataset).select_columns(columns).take_all()
        out.sort(key=lambda row: int(row[INDEX]))
        if [int(row[INDEX]) for row in out] != list(range(len(rows))):
            raise RuntimeError(f"Ray returned {len(out)} rows for {len(rows)} requests")
        return out

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[str]]:
        """``sampling.n`` completions per prompt, decoded as the other engines decode them."""
        prompts = _check_prompts(prompts)
        self.failures = []
        if not prompts:
            return []
        if self._replicas is not None:
            results, self.failures = self._replicas.generate(prompts, sampling, self.lora)
            return results
        rows = self.generation_rows(prompts, sampling)
        return self.read_generation(self._run(rows), len(prompts), sampling)

    def score_choices(self, prompts: list[str], choices: list[str]) -> list[list[float]]:
        """Total log-likelihood of each choice after each prompt (forced-choice steps, as `VLLMEngine`).

        Every step of every prompt is one row of a single dataset; a row that
        failed scores its choice ``-inf``.
        """
        prompts = _check_scoring_inputs(prompts, choices)
        self.failures = []
        if self._replicas is not None:
            scores, self.failures = self._replicas.score_choices(prompts, choices, self.lora)
            return scores
        rows, owners = self.scoring_rows(prompts, choices)
        return self.read_scores(self._run(rows) if rows else [], owners, len(prompts), len(choices))

    # The ``data`` backend's rows and how their results are read: `generate` and `score_choices` are
    # one dataset each; the rows of both can go in one (the tests do: each dataset restarts the replica).
    def generation_rows(self, prompts: list[str], sampling: SamplingParams) -> list[dict[str, Any]]:
        """One row per prompt and sample (one per prompt when greedy: the samples are all the same)."""
        samples = 1 if sampling.greedy else sampling.n
        params = {
            "temperature": sampling.temperature,
            "top_k": sampling.top_k or 0,
            "top_p": sampling.top_p or 1.0,
            "max_tokens": sampling.max_new_tokens,
            "stop": list(sampling.stop) or None,
        }
        rows = []
        for i, ids in enumerate(self._encode(prompts)):
            for k in range(samples):
                seed = (
                    None
                    if (self.cpu or sampling.seed is None or sampling.greedy)
                    else sampling.seed + i * samples + k
                )
                rows.append(self._row(ids, **params, seed=seed))
        return rows

    def _row(self, ids: list[int], **params: Any) -> dict[str, Any]:
        """A dataset row; every row has the same sampling keys and types, whatever it is for (Ray
        reads a column that is an int in some rows and missing in others as floats, which vLLM refuses)."""
        defaults = {
            "n": 1,  # Ray's stage returns one completion per row
            "temperature": 0.0,
            "top_k": 0,
            "top_p": 1.0,
            "max_tokens": 1,
            "stop": None,
            "stop_token_ids": self.eos_token_ids,
            "skip_special_tokens": True,  # vLLM detokenizes to find stop strings; we decode the token ids
            "seed": None,
            "logprobs": 0,  # the sampled token's own: free, and scoring needs it
            "allowed_token_ids": None,
            "detokenize": True,
        }
        return {"tokenized_prompt": ids, "sampling_params": {**defaults, **params}}

    def read_generation(
        self, out: list[dict[str, Any]], num_prompts: int, sampling: SamplingParams
    ) -> list[list[str]]:
        """The completions of `generation_rows`' results (in row order); failed rows are `FailedCompletion`s."""
        samples = 1 if sampling.greedy else sampling.n
        results = []
        for i in range(num_prompts):
            texts = []
            for row in out[i * samples : (i + 1) * samples]:
                error = row.get("__inference_error__") or ""
                if error:
                    self.failures.append(error)
                    texts.append(FailedCompletion(error))
                else:
                    tokens = [int(t) for t in row["generated_tokens"]]
                    texts.append(decode_completion(self.tokenizer, tokens, sampling.stop, self.eos_token_ids))
            results.append(texts * (sampling.n // samples))
        if self.failures:
            logger.warning(
                "%d of %d rows failed in the engine: %s", len(self.failures), len(out), self.failures[0]
            )
        return results

    def scoring_rows(
        self, prompts: list[str], choices: list[str]
    ) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """One row per forced-choice step, and for each row its (prompt x choice, token)."""
        prompt_ids = self._encode(prompts)
        joint = self._encode([p + c for p in prompts for c in choices])
        rows, owners = [], []
        for k, tokens in enumerate(joint):
            start = _common_prefix_len(prompt_ids[k // len(choices)], tokens)
            if start == 0:
                raise ValueError(
                    f"prompt {k // len(choices)} merges entirely into a choice when tokenized together; "
                    "cannot score a choice without a preceding token"
                )
            for position in range(start, len(tokens)):
                rows.append(
                    self._row(
                        tokens[:position],
                        allowed_token_ids=[tokens[position]],
                        stop_token_ids=[],
                        detokenize=False,
                    )
                )
                owners.append((k, tokens[position]))
        return rows, owners

    def read_scores(
        self, out: list[dict[str, Any]], owners: list[tuple[int, int]], num_prompts: int, num_choices: int
    ) -> list[list[float]]:
        """Each choice's summed log-probability from `scoring_rows`' results; a failed step gives ``-inf``."""
        totals = [0.0] * (num_prompts * num_choices)
        for (k, token), row in zip(owners, out, strict=True):
            error = row.get("__inference_error__") or ""
            if error:
                self.failures.append(error)
                totals[k] = float("-inf")
                continue
            step = row["logprobs"][0]
            entry = step.get(token, step.get(str(token)))
            totals[k] += float(entry["logprob"] if isinstance(entry, dict) else entry)
        return [totals[i * num_choices : (i + 1) * num_choices] for i in range(num_prompts)]


def _free_cpus(ray: Any, want: int, wait_s: float = 20.0) -> int:
    """The cluster's free CPUs, waiting a little for ``want`` of them: a just-closed engine's actors
    hand theirs back a moment after they are killed."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        free = int(ray.available_resources().get("CPU", 0))
        if free >= want or time.monotonic() > deadline:
            return free
        time.sleep(0.5)


def _model_context(model_path: str) -> int | None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    return getattr(getattr(config, "text_config", config), "max_position_embeddings", None)


def _cluster_has_no_gpu(address: str) -> bool:
    ray = start_ray(address)
    return not ray.cluster_resources().get("GPU")
