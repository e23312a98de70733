"""Tests for selfguide_hf.generation on a tiny randomly initialised Llama (offline, seconds).

A random model writes gibberish, which is fine: every check compares two ways
of computing the same thing (batched vs single, shared prefill vs plain
generate, cached scoring vs one plain forward), never the text's quality.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from selfguide_hf.distributed import end_processes, generate_distributed
from selfguide_hf.generation import (
    GenerationEngine,
    SamplingParams,
    TransformersEngine,
    cut_at_stop,
)
from tests import tiny_model


def build_tiny_model(out_dir: Path, pad_token: bool = True) -> Path:
    """The shared tiny model, with outputs that differ from prompt to prompt."""
    return tiny_model.build_tiny_model(out_dir, pad_token=pad_token, varied_outputs=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A tiny model gains nothing from threads, and OpenMP spinning on a busy 2-core box costs 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gen"))


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(tiny_dir)), AutoTokenizer.from_pretrained(str(tiny_dir))


def make_engine(model_and_tokenizer, **kwargs) -> TransformersEngine:
    model, tokenizer = model_and_tokenizer
    kwargs.setdefault("show_progress", False)
    return TransformersEngine(model, tokenizer, **kwargs)


def chat_prompts(tokenizer, texts: list[str]) -> list[str]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
        )
        for t in texts
    ]


USER_TEXTS = [
    "Hi",
    "The teacher explains a long story to the student, and the student questions every input again.",
    "A dog likes the output.",
    "claim: the cat reads the question. perspective: my friend writes a short poem today. answer:",
    "Our team answers",
]


@pytest.fixture(scope="module")
def prompts(model_and_tokenizer) -> list[str]:
    return chat_prompts(model_and_tokenizer[1], USER_TEXTS)


GREEDY = SamplingParams(max_new_tokens=12)


# ---------------------------------------------------------------------- SamplingParams


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_new_tokens": 0},
        {"max_new_tokens": 2.5},
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"top_k": 0},
        {"top_k": -3},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"n": 0},
        {"n": True},
        {"stop": [""]},
        {"stop": [None]},
        {"stop": 5},
        {"seed": -1},
        {"seed": "1"},
    ],
)
def test_invalid_sampling_params_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SamplingParams(**kwargs)


def test_sampling_params_defaults_and_single_stop_string():
    params = SamplingParams(stop="\n")
    assert params.stop == ["\n"]
    assert params.greedy and params.n == 1 and params.max_new_tokens == 256
    assert not SamplingParams(temperature=0.7).greedy


def test_cut_at_stop_uses_earliest_stop():
    assert cut_at_stop("abc\n\nInput: x", ["Input:", "\n\n"]) == "abc"
    assert cut_at_stop("abc", ["z"]) == "abc"
    assert cut_at_stop("abc", []) == "abc"


# ---------------------------------------------------------------------- generate


def test_engine_satisfies_protocol(model_and_tokenizer):
    assert isinstance(make_engine(model_and_tokenizer), GenerationEngine)


def test_outputs_follow_input_order(model_and_tokenizer, prompts):
    """Prompts are length-sorted internally; results must come back in input order."""
    engine = make_engine(model_and_tokenizer, batch_size=1)
    out = engine.generate(prompts, GREEDY)
    singles = [engine.generate([p], GREEDY)[0] for p in prompts]
    assert out == singles
    assert len({o[0] for o in out}) > 1, "test has no teeth if every prompt gives the same text"
    reversed_out = engine.generate(prompts[::-1], GREEDY)
    assert reversed_out == out[::-1]


def test_left_padding_does_not_change_greedy_outputs(model_and_tokenizer, prompts):
    batched = make_engine(model_and_tokenizer, batch_size=len(prompts)).generate(prompts, GREEDY)
    single = make_engine(model_and_tokenizer, batch_size=1).generate(prompts, GREEDY)
    assert batched == single


def test_tokenizer_padding_side_untouched_and_pad_falls_back_to_eos(tmp_path, prompts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path, pad_token=False)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    assert tokenizer.pad_token_id is None
    tokenizer.padding_side = "right"
    engine = TransformersEngine(
        AutoModelForCausalLM.from_pretrained(str(path)), tokenizer, show_progress=False
    )
    assert engine.pad_token_id == tokenizer.eos_token_id
    out = engine.generate(prompts, GREEDY)
    assert len(out) == len(prompts)
    assert tokenizer.padding_side == "right" and tokenizer.pad_token_id is None


@pytest.mark.parametrize("share_prefill", [True, False])
def test_n_samples_shape(model_and_tokenizer, prompts, share_prefill):
    engine = make_engine(model_and_tokenizer, batch_size=4, share_prefill=share_prefill)
    out = engine.generate(prompts[:3], SamplingParams(max_new_tokens=6, temperature=1.0, n=4, seed=0))
    assert len(out) == 3 and all(len(samples) == 4 for samples in out)
    assert all(isinstance(s, str) for samples in out for s in samples)
    assert any(len(set(samples)) > 1 for samples in out), "temperature 1 samples should differ"


def test_greedy_n_gives_identical_copies(model_and_tokenizer, prompts):
    engine = make_engine(model_and_tokenizer)
    out = engine.generate(prompts[:2], SamplingParams(max_new_tokens=8, n=3))
    assert out == [[s[0]] * 3 for s in engine.generate(prompts[:2], SamplingParams(max_new_tokens=8))]


def test_shared_prefill_matches_plain_generate(model_and_tokenizer, prompts):
    """top_k=1 sampling is argmax, so both paths must give the plain greedy text, copied n times."""
    argmax = SamplingParams(max_new_tokens=12, temperature=1.0, top_k=1, n=3, seed=0)
    shared = make_engine(model_and_tokenizer, batch_size=9, share_prefill=True).generate(prompts, argmax)
    plain = make_engine(model_and_tokenizer, batch_size=9, share_prefill=False).generate(prompts, argmax)
    greedy = make_engine(model_and_tokenizer, batch_size=1).generate(prompts, GREEDY)
    assert shared == plain == [[g[0]] * 3 for g in greedy]


def test_shared_prefill_cache_equals_plain_forward(model_and_tokenizer, prompts):
    """The prefilled cache plus one step gives the same next-token logits as a plain forward."""
    model, _ = model_and_tokenizer
    engine = make_engine(model_and_tokenizer)
    ids, mask = engine._left_pad(engine._encode(prompts))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        full = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
        cache = engine._prefill(ids[:, :-1], mask[:, :-1])
        cache.batch_repeat_interleave(2)
        step = model(
            input_ids=ids[:, -1:].repeat_interleave(2, 0),
            attention_mask=mask.repeat_interleave(2, 0),
            position_ids=positions[:, -1:].repeat_interleave(2, 0),
            past_key_values=cache,
        ).logits[:, -1]
    torch.testing.assert_close(step, full.repeat_interleave(2, 0), atol=1e-4, rtol=1e-4)


def test_one_token_prompt_batched_with_a_long_one(model_and_tokenizer):
    """A one-token prompt leaves an all-padding row in the shared prefill; it must not leak NaNs."""
    model, tokenizer = model_and_tokenizer
    prompts = ["<|im_start|>", "<|im_start|>user\nThe teacher explains a long story"]
    engine = make_engine(model_and_tokenizer, batch_size=8)
    argmax = SamplingParams(max_new_tokens=GREEDY.max_new_tokens, temperature=1.0, top_k=1, n=2)
    greedy = [engine.generate([p], GREEDY)[0][0] for p in prompts]
    assert engine.generate(prompts, argmax) == [[g, g] for g in greedy]
    choices = ["user", "assistant", "hello"]
    scores = engine.score_choices(prompts, choices)
    for prompt, row in zip(prompts, scores):
        assert row == pytest.approx(manual_scores(model, tokenizer, prompt, choices), abs=1e-3)


def test_stop_strings_cut_output(model_and_tokenizer, prompts):
    engine = make_engine(model_and_tokenizer, batch_size=4)
    long = SamplingParams(max_new_tokens=20)
    free = [o[0] for o in engine.generate(prompts, long)]
    # A stop string taken from the middle of a real completion, so it is sure to occur
    # (plain ASCII letters: byte-level gibberish may hold half characters).
    candidates = [
        text[i : i + 2]
        for text in free
        for i in range(len(text) // 2, len(text) - 1)
        if text[i : i + 2].isascii() and text[i : i + 2].isalpha()
    ]
    assert candidates, free
    stop = candidates[0]
    stopped = [o[0] for o in engine.generate(prompts, SamplingParams(max_new_tokens=20, stop=[stop]))]
    for before, after in zip(free, stopped):
        assert after == cut_at_stop(before, [stop]).strip()
        assert stop not in after
    assert any(len(a) < len(b) for a, b in zip(stopped, free))


def test_stop_strings_with_samples(model_and_tokenizer, prompts):
    engine = make_engine(model_and_tokenizer, batch_size=6)
    stop = ["e", "a"]
    out = engine.generate(
        prompts[:2], SamplingParams(max_new_tokens=20, temperature=1.0, n=3, stop=stop, seed=3)
    )
    assert all("e" not in s and "a" not in s for samples in out for s in samples)


def test_seed_makes_sampling_reproducible(model_and_tokenizer, prompts):
    engine = make_engine(model_and_tokenizer, batch_size=4)
    params = SamplingParams(max_new_tokens=10, temperature=1.0, n=3, seed=123)
    torch.manual_seed(7)
    before = torch.rand(3)
    first = engine.generate(prompts, params)
    second = engine.generate(prompts, params)
    after = torch.rand(3)
    assert first == second
    other = engine.generate(prompts, SamplingParams(max_new_tokens=10, temperature=1.0, n=3, seed=124))
    assert other != first
    torch.manual_seed(7)
    expected_before = torch.rand(3)
    assert torch.equal(before, expected_before)
    assert torch.equal(after, torch.rand(3)), "the caller's RNG stream must not be consumed by a seeded call"


def test_empty_and_invalid_prompts(model_and_tokenizer):
    engine = make_engine(model_and_tokenizer)
    assert engine.generate([], GREEDY) == []
    with pytest.raises(TypeError):
        engine.generate("a single string", GREEDY)
    with pytest.raises(ValueError):
        engine.generate([""], GREEDY)


# ---------------------------------------------------------------------- score_choices


def manual_scores(model, tokenizer, prompt: str, choices: list[str]) -> list[float]:
    """Reference: one plain forward over prompt+choice, summing the choice tokens' log-probs."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    scores = []
    for choice in choices:
        ids = tokenizer(prompt + choice, add_special_tokens=False)["input_ids"]
        start = next(
            (i for i, (a, b) in enumerate(zip(prompt_ids, ids)) if a != b), min(len(prompt_ids), len(ids))
        )
        with torch.inference_mode():
            logprobs = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        scores.append(sum(float(logprobs[j - 1, ids[j]]) for j in range(start, len(ids))))
    return scores


def test_score_choices_matches_manual_forward(model_and_tokenizer, prompts):
    model, tokenizer = model_and_tokenizer
    choices = ["support", "undermine", " the teacher explains", "!"]
    for batch_size in (1, 3, 64):
        scores = make_engine(model_and_tokenizer, batch_size=batch_size).score_choices(prompts, choices)
        assert len(scores) == len(prompts) and all(len(s) == len(choices) for s in scores)
        for prompt, row in zip(prompts, scores):
            assert row == pytest.approx(manual_scores(model, tokenizer, prompt, choices), abs=1e-3)


def test_score_choices_handles_token_merging_at_the_boundary(model_and_tokenizer):
    """Prompt 'The teach' + choice 'er' tokenizes jointly into one 'teacher' token."""
    model, tokenizer = model_and_tokenizer
    prompt = "<|im_start|>user\nThe teach"
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joint = tokenizer(prompt + "er", add_special_tokens=False)["input_ids"]
    assert joint[: len(prompt_ids)] != prompt_ids, "fixture should exercise a merge across the boundary"
    choices = ["er", "ers", " x"]
    scores = make_engine(model_and_tokenizer).score_choices([prompt], choices)[0]
    assert scores == pytest.approx(manual_scores(model, tokenizer, prompt, choices), abs=1e-3)
    assert all(s < 0 for s in scores)


def test_score_choices_rejects_bad_choices(model_and_tokenizer, prompts):
    engine = make_engine(model_and_tokenizer)
    with pytest.raises(ValueError):
        engine.score_choices(prompts, [])
    with pytest.raises(ValueError):
        engine.score_choices(prompts, ["yes", ""])
    assert engine.score_choices([], ["yes"]) == []


# ---------------------------------------------------------------------- distributed


def test_generate_distributed_single_process_is_engine_generate(model_and_tokenizer, prompts):
    engine = make_engine(model_and_tokenizer)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, n=2, seed=5)
    assert generate_distributed(engine, prompts, params) == engine.generate(prompts, params)


def test_end_processes_tears_down_the_group_and_is_a_no_op_without_one(tmp_path, monkeypatch):
    """The front doors end with it; leaving a gloo group to interpreter exit can SIGABRT a finished rank."""
    import torch.distributed as dist

    end_processes()  # no group: nothing to do, no error
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    end_processes()
    assert not dist.is_initialized()
    # after an error: no barrier (the other ranks may never reach it), the group still torn down
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store2'}", rank=0, world_size=1)
    barriers = []
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: barriers.append(1))
    end_processes(wait=False)
    assert not dist.is_initialized() and barriers == []


FAILED_RANK = textwrap.dedent(
    """
    import sys, torch.distributed as dist
    rank, store = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    from selfguide_hf.distributed import end_processes
    if rank == 1:  # the rank whose run failed: what the front doors do on their error path
        end_processes(wait=False)
        sys.exit(2)
    try:
        dist.barrier()  # the other rank, still waiting for it
        print("returned")
    except RuntimeError as exc:
        print("error:", exc)
    """
)


def test_a_failed_rank_exits_with_its_status_and_the_waiting_rank_is_not_left_hanging(tmp_path):
    """end_processes(wait=False) on one rank: it exits 2 at once; a rank in a collective gets an error."""
    script = tmp_path / "failed_rank.py"
    script.write_text(FAILED_RANK)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(tmp_path / "store")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    (out0, err0), (_, err1) = (rank.communicate(timeout=120) for rank in ranks)
    assert ranks[1].returncode == 2, err1[-2000:]
    # gloo words the lost peer either way: "Connection closed by peer" or "Read error ... Connection reset"
    lost_peer = any(word in out0 for word in ("closed", "reset", "Read error"))
    assert ranks[0].returncode == 0 and out0.startswith("error:") and lost_peer, (out0, err0[-2000:])


DIST_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from selfguide_hf.distributed import end_processes, generate_distributed
    from selfguide_hf.generation import SamplingParams, TransformersEngine

    state = PartialState(cpu=True)
    path, out_path = sys.argv[1], sys.argv[2]
    prompts = json.loads(sys.argv[3])
    engine = TransformersEngine(
        AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), show_progress=False
    )
    params = SamplingParams(max_new_tokens=6, temperature=1.0, n=2, seed=11)
    results = generate_distributed(engine, prompts, params)
    with open(f"{out_path}.{state.process_index}", "w") as f:
        json.dump(results, f)
    end_processes()
    """
)


@pytest.mark.slow
def test_generate_distributed_two_processes(tiny_dir, model_and_tokenizer, prompts, tmp_path):
    """Two gloo processes: every rank gets all results in order, shard k sampled with seed + k."""
    script = tmp_path / "dist.py"
    script.write_text(DIST_SCRIPT)
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",  # a free port of its own: a fixed one can be held by an earlier run
            str(script),
            str(tiny_dir),
            str(out),
            json.dumps(prompts),
        ],
        check=True,
        env=env,
        timeout=300,
    )
    rank0 = json.loads(Path(f"{out}.0").read_text())
    rank1 = json.loads(Path(f"{out}.1").read_text())
    assert rank0 == rank1
    engine = make_engine(model_and_tokenizer)
    half = (len(prompts) + 1) // 2
    expected = engine.generate(
        prompts[:half], SamplingParams(max_new_tokens=6, temperature=1.0, n=2, seed=11)
    )
    expected += engine.generate(
        prompts[half:], SamplingParams(max_new_tokens=6, temperature=1.0, n=2, seed=12)
    )
    assert rank0 == expected


def test_shared_engines_start_one_engine_per_setting_and_close_them_when_the_block_ends(monkeypatch):
    """The draws of a run get one synthesis engine: `make_engine` reuses, `close_engine` waits for the block."""
    from selfguide_hf import engines

    started: list[tuple] = []

    class Engine:
        closed = False

        def close(self) -> None:
            self.closed = True

    def start(name, model_path, tokenizer, **options):
        started.append((name, model_path, options["batch_size"]))
        return Engine()

    monkeypatch.setattr(engines, "_start_engine", start)
    with engines.shared_engines():
        first = engines.make_engine("vllm", "m", None, seed=0)
        engines.close_engine(first)  # a draw's synthesis ends: the engine stays up for the next
        assert engines.make_engine("vllm", "m", None, seed=1) is first and not first.closed
        other = engines.make_engine("vllm", "m", None, batch_size=4)  # another setting: another engine
        ray = [engines.make_engine("ray", "m", None), engines.make_engine("ray", "m", None)]
    assert started == [("vllm", "m", 8), ("vllm", "m", 4), ("ray", "m", 8), ("ray", "m", 8)]
    assert first.closed and other.closed and not any(r.closed for r in ray)  # Ray engines are never shared
    outside = engines.make_engine("vllm", "m", None)
    assert outside is not first and len(started) == 5
    engines.close_engine(outside)
    assert outside.closed
