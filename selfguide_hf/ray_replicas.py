"""`VLLMReplicas`: vLLM engines that stay up as Ray actors for a whole stage, each call split among them.

The default backend of ``--engine ray``. Ray Data LLM starts its replicas for
every dataset it runs, and a SELF-GUIDE stage makes many small calls (two per
synthesis round, one per evaluation arm): measured here, 44 s of engine start
per call against 12 s once for plain vLLM (docs/BENCHMARKS.md, "Scaling
out"). These replicas start once, in parallel, and each call's prompts are
split into contiguous shares, one per replica, answered by `VLLMEngine` in the
actor (so the answers are those of ``--engine vllm``) and put back in order.

A prompt longer than the context is not sent: it comes back as a
`FailedCompletion` (``-inf`` scores) with the reason. A replica whose call
raises fails only its own share, the same way; a replica that died (its node
went away) is not restarted: the next call fails with Ray's error.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from selfguide_hf.generation import FailedCompletion, SamplingParams

logger = logging.getLogger(__name__)

__all__ = ["VLLMReplicas"]

# How long replicas may take to start (a 70B model from a network disk is slow); then a clear error
# instead of Ray waiting forever for resources the cluster does not have.
START_TIMEOUT_S = float(os.environ.get("SELFGUIDE_RAY_START_TIMEOUT", "1800"))


class _Replica:
    """One vLLM engine in a Ray actor; the tokenizer is loaded here, not shipped."""

    def __init__(self, model_path: str, engine_kwargs: dict[str, Any]) -> None:
        from transformers import AutoTokenizer

        from selfguide_hf.vllm_engine import VLLMEngine

        threads = engine_kwargs.get("threads")
        if threads:  # torch in a fresh actor computes on every core: replicas sharing a machine would
            import torch  # oversubscribe it (two replicas of 1 CPU each ran 2.3x slower than one)

            torch.set_num_threads(int(threads))
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.engine = VLLMEngine(model_path, tokenizer, **engine_kwargs)

    def generate(self, prompts: list[str], sampling: SamplingParams, adapter: str | None) -> list[list[str]]:
        self.engine.use_adapter(adapter or False)
        return self.engine.generate(prompts, sampling)

    def score_choices(self, prompts: list[str], choices: list[str], adapter: str | None) -> list[list[float]]:
        self.engine.use_adapter(adapter or False)
        return self.engine.score_choices(prompts, choices)

    def close(self) -> None:
        self.engine.close()


class VLLMReplicas:
    """``count`` `_Replica` actors with ``resources`` each (``num_cpus`` / ``num_gpus``)."""

    def __init__(
        self,
        ray: Any,
        model_path: str,
        tokenizer: Any,
        engine_kwargs: dict[str, Any],
        count: int,
        resources: dict[str, float],
        context: int | None,
    ) -> None:
        self.tokenizer = tokenizer
        self.context = context
        env = {"TOKENIZERS_PARALLELISM": "false"}
        if engine_kwargs.get("threads"):
            env["OMP_NUM_THREADS"] = str(engine_kwargs["threads"])
        actor = ray.remote(_Replica).options(**resources, runtime_env={"env_vars": env})
        self.ray = ray
        self.actors = [actor.remote(model_path, engine_kwargs) for _ in range(count)]
        ready = [a.__ray_ready__.remote() for a in self.actors]  # started in parallel; errors surface here
        try:
            ray.get(ready, timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise TimeoutError(
                f"{count} vLLM replica(s) with {resources} each did not start within {START_TIMEOUT_S:.0f} s: "
                "the cluster lacks the resources (ray status shows what it has)"
            ) from None

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.get(actor.close.remote())
            except Exception as exc:  # a replica that already died has nothing left to free
                logger.debug("closing a replica: %s", exc)
            self.ray.kill(actor)
        self.actors = []

    # ----------------------------------------------------------- one call
    def _too_long(self, prompts: list[str]) -> dict[int, str]:
        """Prompts that do not fit the context, with the reason (vLLM would refuse the whole batch)."""
        if not self.context:
            return {}
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        return {
            i: f"prompt of {n} tokens does not fit the model's context of {self.context}"
            for i, n in enumerate(lengths)
            if n >= self.context
        }

    def _shares(self, indices: list[int]) -> list[list[int]]:
        count = min(len(self.actors), len(indices))
        size, extra = divmod(len(indices), count) if count else (0, 0)
        shares, start = [], 0
        for k in range(count):
            end = start + size + (1 if k < extra else 0)
            shares.append(indices[start:end])
            start = end
        return shares

    def _call(
        self, method: str, prompts: list[str], args: tuple[Any, ...], failed_value: Any
    ) -> tuple[list[Any], list[str]]:
        """Each replica answers a contiguous share; results back in prompt order, failures as given."""
        failed = self._too_long(prompts)
        todo = [i for i in range(len(prompts)) if i not in failed]
        results: list[Any] = [None] * len(prompts)
        pending = []
        for share in self._shares(todo):
            share_args = args
            if method == "generate":  # per-request seeds as one engine would give them (GPUs use them)
                sampling: SamplingParams = args[0]
                if sampling.seed is not None:
                    import dataclasses

                    share_args = (dataclasses.replace(sampling, seed=sampling.seed + share[0]), *args[1:])
            actor = self.actors[len(pending)]
            pending.append((share, getattr(actor, method).remote([prompts[i] for i in share], *share_args)))
        for share, ref in pending:
            try:
                answers = self.ray.get(ref)
            except Exception as exc:  # this share fails; the others stand
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                failed.update({i: reason for i in share})
                continue
            for i, answer in zip(share, answers, strict=True):
                results[i] = answer
        for i, reason in failed.items():
            results[i] = failed_value(reason)
        return results, [failed[i] for i in sorted(failed)]

    def generate(
        self, prompts: list[str], sampling: SamplingParams, adapter: str | None
    ) -> tuple[list[list[str]], list[str]]:
        return self._call(
            "generate", prompts, (sampling, adapter), lambda why: [FailedCompletion(why)] * sampling.n
        )

    def score_choices(
        self, prompts: list[str], choices: list[str], adapter: str | None
    ) -> tuple[list[list[float]], list[str]]:
        return self._call(
            "score_choices", prompts, (choices, adapter), lambda why: [float("-inf")] * len(choices)
        )
