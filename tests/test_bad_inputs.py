"""Bad input, one table: every case exits 2 (or raises the documented error) with one line naming the fault.

Each row is a front (the `selfguide` command, the recipe, `load_dataset`), the
files it is given and what the one error line must contain. Every case runs in
its own folder as the working directory, and nothing may be written outside
the run's output folder and the dataset cache.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from selfguide_hf import cli

ROOT = Path(__file__).resolve().parent.parent
CPU_CONFIG = ROOT / "recipes" / "configs" / "smollm2-135m_lora_cpu.yaml"
DEMOS = [{"input": "Great film.", "output": "positive"}, {"input": "Dull and long.", "output": "negative"}]
SPEC = {"task": "sentiment", "instruction": "Is the review positive or negative?", "demonstrations": DEMOS}


def spec(**changes) -> dict:
    return {**SPEC, "labels": ["positive", "negative"], **changes}


@dataclass
class Case:
    front: str  # "cli", "recipe", "load_dataset"
    args: list[str]  # {model}, {adapter}, {out} and file names of `files` are filled in
    message: str  # the one error line contains this
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the case folder first
    exception: type[Exception] | None = None  # load_dataset: the documented exception


def run_file(name: str, content: str | bytes) -> dict[str, str | bytes]:
    return {name: content}


BAD_UTF8 = b'{"input": "caf\xe9", "output": "positive"}\n'
LONG_INPUT = json.dumps({"input": "claim: " + "word " * 6000, "output": "support"}) + "\n"

CASES: dict[str, Case] = {
    # ----------------------------------------------------------- spec files
    "labels collide: + and -": Case("cli", ["evaluate", "--task", "s.json"], "label '+' is empty once punctuation", run_file("s.json", json.dumps(spec(labels=["+", "-"], demonstrations=[{"input": "x", "output": "+"}])))),
    "labels collide: (A) and A": Case("cli", ["evaluate", "--task", "s.json"], "duplicate label: '(A)' and 'A'", run_file("s.json", json.dumps(spec(labels=["(A)", "A"], demonstrations=[{"input": "x", "output": "A"}])))),
    "labels collide: not-entailment": Case("cli", ["evaluate", "--task", "s.json"], "'not-entailment' and 'notentailment'", run_file("s.json", json.dumps(spec(labels=["not-entailment", "notentailment"], demonstrations=[{"input": "x", "output": "notentailment"}])))),
    "label with a trailing space": Case("cli", ["evaluate", "--task", "s.json"], "'negative ' has leading or trailing spaces", run_file("s.json", json.dumps(spec(labels=["positive", "negative "])))),
    "task name escapes the output folder": Case("cli", ["synthesize", "--task", "s.json"], "'../../x' is not a usable task name", run_file("s.json", json.dumps(spec(task="../../x")))),
    "absolute task name": Case("cli", ["synthesize", "--task", "s.yaml"], "'/tmp/x' is not a usable task name", run_file("s.yaml", "task: /tmp/x\ninstruction: i\nlabels: [a, b]\ndemonstrations: [{input: x, output: a}]\n")),
    "spec: instruction missing": Case("cli", ["evaluate", "--task", "s.json"], "field 'instruction': missing", run_file("s.json", json.dumps({k: v for k, v in spec().items() if k != "instruction"}))),
    "spec: demonstrations not a list": Case("cli", ["evaluate", "--task", "s.json"], "field 'demonstrations': must be a list", run_file("s.json", json.dumps(spec(demonstrations="x")))),
    "spec: demonstration output not a label": Case("cli", ["evaluate", "--task", "s.json"], "'neutral' is not one of the labels", run_file("s.json", json.dumps(spec(demonstrations=[{"input": "x", "output": "neutral"}])))),
    "spec: unknown field": Case("cli", ["evaluate", "--task", "s.json"], "unknown field(s) ['lables']", run_file("s.json", json.dumps({**spec(), "lables": []}))),
    "spec: one label": Case("cli", ["evaluate", "--task", "s.json"], "at least two labels", run_file("s.json", json.dumps(spec(labels=["positive"], demonstrations=[DEMOS[0]])))),
    "spec: bad type": Case("cli", ["evaluate", "--task", "s.json"], "field 'type': must be one of", run_file("s.json", json.dumps(spec(type="regression")))),
    "spec: bad metric": Case("cli", ["evaluate", "--task", "s.json"], "field 'metric': must be one of", run_file("s.json", json.dumps(spec(metric="bleu")))),
    "spec: malformed JSON": Case("cli", ["evaluate", "--task", "s.json"], "s.json: malformed JSON at line 1", run_file("s.json", "{task: ")),
    "spec: malformed YAML": Case("cli", ["evaluate", "--task", "s.yaml"], "s.yaml: malformed YAML", run_file("s.yaml", "task: [unclosed\n")),
    "spec: not UTF-8": Case("cli", ["evaluate", "--task", "s.json"], "s.json: cannot read file", run_file("s.json", b'{"task": "caf\xe9"}')),
    "spec: no such file": Case("cli", ["evaluate", "--task", "missing.json"], "missing.json: no such file"),
    "unknown bundled task": Case("cli", ["evaluate", "--task", "task9"], "unknown bundled task 'task9'"),
    # ------------------------------------------------------------- NI files
    "NI: Definition missing": Case("cli", ["evaluate", "--task", "task1_x.json"], "field 'Definition': missing or empty", run_file("task1_x.json", json.dumps({"Definition": "", "Positive Examples": DEMOS}))),
    "NI: no positive examples": Case("cli", ["evaluate", "--task", "task1_x.json"], "field 'Positive Examples': missing or empty", run_file("task1_x.json", json.dumps({"Definition": "d", "Positive Examples": []}))),
    "NI: Instances not a list": Case("cli", ["evaluate", "--task", "task1_x.json"], "field 'Instances': must be a list", run_file("task1_x.json", json.dumps({"Definition": "d", "Positive Examples": DEMOS, "Instances": {}}))),
    # ------------------------------------------------------------ eval files
    "eval: field output missing": Case("cli", ["run", "--task", "task738", "--eval-file", "e.jsonl"], "e.jsonl:1: missing field 'output'", run_file("e.jsonl", json.dumps({"input": "claim: x"}) + "\n")),
    "eval: malformed JSON line": Case("cli", ["run", "--task", "task738", "--eval-file", "e.jsonl"], "e.jsonl:2: malformed JSON", run_file("e.jsonl", json.dumps({"input": "x", "output": "support"}) + "\n{oops\n")),
    "eval: not UTF-8": Case("cli", ["run", "--task", "task738", "--eval-file", "e.jsonl"], "e.jsonl: not UTF-8 text", run_file("e.jsonl", BAD_UTF8)),
    "eval: reference not a label": Case("cli", ["run", "--task", "task738", "--eval-file", "e.jsonl"], "'maybe' is not one of the task's labels", run_file("e.jsonl", json.dumps({"input": "x", "output": "maybe"}) + "\n")),
    "eval: unsupported file type": Case("cli", ["run", "--task", "task738", "--eval-file", "e.txt"], "unsupported eval file type '.txt'", run_file("e.txt", "x")),
    "eval: no rows": Case("cli", ["run", "--task", "task738", "--eval-file", "e.jsonl"], "e.jsonl: no rows", run_file("e.jsonl", "\n")),
    "eval: CSV without output column": Case("cli", ["run", "--task", "task738", "--eval-file", "e.csv"], "missing column(s) ['output']", run_file("e.csv", "input\nx\n")),
    "eval: no such file": Case("cli", ["run", "--task", "task738", "--eval-file", "nope.jsonl"], "nope.jsonl: no such eval file"),
    "eval: input over the model's context": Case("cli", ["run", "--task", "task738", "--eval-file", "e.jsonl"], "do not fit the model's context of 4096 tokens", run_file("e.jsonl", LONG_INPUT)),
    "eval: unbundled task without eval file": Case("cli", ["run", "--task", "s.json"], "has no built-in test split", run_file("s.json", json.dumps(spec()))),
    # ------------------------------------------------------------ CLI values
    "--epochs 0": Case("cli", ["run", "--task", "task738", "--epochs", "0"], "--num-train-epochs must be > 0 (or --max-steps > 0), got 0.0"),
    "--epochs -1": Case("cli", ["train", "--task", "task738", "--epochs", "-1"], "--num-train-epochs must be > 0 (or --max-steps > 0), got -1.0"),
    "--max-eval -1": Case("cli", ["run", "--task", "task738", "--max-eval", "-1"], "--eval-max-rows must be a whole number >= 0, got -1"),
    "--num-inputs 0": Case("cli", ["synthesize", "--task", "task738", "--num-inputs", "0"], "--num-inputs must be a whole number >= 1, got 0"),
    "--learning-rate 0": Case("cli", ["run", "--task", "task738", "--learning-rate", "0"], "--learning-rate must be > 0, got 0.0"),
    "--batch-size 0": Case("cli", ["evaluate", "--task", "task738", "--batch-size", "0"], "--eval-batch-size must be a whole number >= 1, got 0"),
    "--threads abc": Case("cli", ["evaluate", "--task", "task738", "--threads", "abc"], "argument --torch_threads/--torch-threads/--threads: invalid int value: 'abc'"),
    "--synthesis-option preset": Case("cli", ["synthesize", "--task", "task738", "--synthesis-option", "preset=paper"], "give 'preset' as --preset"),
    "--synthesis-option seed": Case("cli", ["synthesize", "--task", "task738", "--synthesis-option", "seed=3"], "give 'seed' as --synthesis-seed"),
    "--synthesis-option model": Case("cli", ["run", "--task", "task738", "--synthesis-option", "model=x"], "give 'model' as --model"),
    "--synthesis-option num_inputs": Case("cli", ["run", "--task", "task738", "--synthesis-option", "num_inputs=3"], "give 'num_inputs' as --num-inputs"),
    "--synthesis-option cache_dir": Case("cli", ["run", "--task", "task738", "--synthesis-option", "cache_dir=x"], "HF_DATASETS_CACHE"),
    "--synthesis-option unknown key": Case("cli", ["run", "--task", "task738", "--synthesis-option", "bogus_key=1"], "bogus_key"),
    "--synthesis-option bad value": Case("cli", ["run", "--task", "task738", "--synthesis-option", "min_frequency=2"], "'min_frequency' must be a number in [0, 1], got 2"),
    "--synthesis-option without =": Case("cli", ["run", "--task", "task738", "--synthesis-option", "novalue"], "--synthesis-option expects KEY=VALUE"),
    "--training-option unknown key": Case("cli", ["run", "--task", "task738", "--training-option", "lora_rank=8"], "lora_rank"),
    "--training-option lora_r 0": Case("cli", ["run", "--task", "task738", "--training-option", "lora_r=0"], "--lora-r must be >= 1, got 0"),
    # ------------------------------------------- values both fronts check alike (before any model)
    "--learning-rate inf": Case("cli", ["run", "--task", "task738", "--learning-rate", "inf"], "--learning-rate must be a finite number, got inf"),
    "recipe: learning_rate inf": Case("recipe", ["--task", "task738", "--learning_rate", "inf"], "--learning_rate must be a finite number, got inf"),
    "YAML learning_rate .inf": Case("cli", ["run", "--config", "c.yaml", "--task", "task738"], "--learning-rate must be a finite number, got inf", run_file("c.yaml", "learning_rate: .inf\n")),
    "text in a numeric option": Case("cli", ["run", "--task", "task738", "--training-option", 'lora_r="big"'], "argument --lora_r/--lora-r: invalid int value: 'big'"),
    "bf16 maybe": Case("cli", ["run", "--task", "task738", "--training-option", 'bf16="maybe"'], "argument --bf16: Truthy value expected: got maybe"),
    "batch size 1.5": Case("cli", ["run", "--task", "task738", "--training-option", "per_device_train_batch_size=1.5"], "invalid int value: '1.5'"),
    "recipe: batch size 1.5": Case("recipe", ["--task", "task738", "--per_device_train_batch_size", "1.5"], "invalid int value: '1.5'"),
    "malformed repo id": Case("cli", ["run", "--task", "task738", "--push-to-hub", "not a repo id"], "--hub-model-id 'not a repo id': Repo id must use alphanumeric chars"),
    "recipe: malformed repo id": Case("recipe", ["--task", "task738", "--push_to_hub", "true", "--hub_model_id", "a/b/c"], "--hub_model_id 'a/b/c'"),
    "YAML epochs a list": Case("recipe", ["--config", "c.yaml", "--task", "task738"], "c.yaml: key 'num_train_epochs': expected one value, got a list [1, 2]", run_file("c.yaml", "num_train_epochs: [1, 2]\n")),
    "YAML use_cpu maybe": Case("cli", ["run", "--config", "c.yaml", "--task", "task738"], "c.yaml: key 'use_cpu': cannot read 'maybe'", run_file("c.yaml", "use_cpu: maybe\n")),
    "YAML batch size 1.5": Case("recipe", ["--config", "c.yaml", "--task", "task738"], "c.yaml: key 'per_device_train_batch_size': cannot read 1.5", run_file("c.yaml", "per_device_train_batch_size: 1.5\n")),
    "YAML method unknown": Case("cli", ["train", "--config", "c.yaml", "--task", "task738"], "c.yaml: key 'method': 'dora' is not one of ['auto', 'full', 'lora', 'qlora']", run_file("c.yaml", "method: dora\n")),
    "--method unknown": Case("cli", ["train", "--task", "task738", "--method", "dora"], "argument --method: invalid choice: 'dora'"),
    "recipe: unknown model": Case("recipe", ["--task", "task738", "--model", "{missing_model}"], "no such model folder"),
    "empty corpus file": Case("cli", ["synthesize", "--task", "task738", "--corpus", "c.jsonl"], "c.jsonl: the corpus file is empty", run_file("c.jsonl", "")),
    # ----------------------------------------------------------- recipe YAML
    "recipe: unknown YAML key": Case("recipe", ["--config", "c.yaml", "--task", "task738"], "c.yaml: unknown key 'lora_rank' (did you mean 'lora_r'?)", run_file("c.yaml", "lora_rank: 8\n")),
    "recipe: bad YAML value": Case("recipe", ["--config", "c.yaml", "--task", "task738"], "c.yaml: key 'learning_rate': cannot read 'fast'", run_file("c.yaml", "learning_rate: fast\n")),
    "recipe: YAML not UTF-8": Case("recipe", ["--config", "c.yaml", "--task", "task738"], "c.yaml: not UTF-8 text", run_file("c.yaml", b"seed: 1 # caf\xe9\n")),
    "recipe: YAML not a mapping": Case("recipe", ["--config", "c.yaml", "--task", "task738"], "expected a mapping of argument names", run_file("c.yaml", "- a\n- b\n")),
    "recipe: unknown synthesis key": Case("recipe", ["--task", "task738", "--synthesis", '{"rounds": 4}'], "synthesis: unknown synthesis parameter(s) ['rounds']"),
    "recipe: lora_r 0": Case("recipe", ["--task", "task738", "--lora_r", "0"], "lora_r must be >= 1, got 0"),
    "recipe: batch size 0": Case("recipe", ["--task", "task738", "--per_device_train_batch_size", "0"], "per_device_train_batch_size must be >= 1, got 0"),
    "recipe: epochs 0": Case("recipe", ["--task", "task738", "--num_train_epochs", "0"], "num_train_epochs must be > 0"),
    "recipe: bad eval file, before synthesis": Case("recipe", ["--task", "task738", "--evaluate", "true", "--eval_file", "e.jsonl"], "e.jsonl:1: missing field 'input'", run_file("e.jsonl", json.dumps({"output": "support"}) + "\n")),
    "recipe: unknown flag": Case("recipe", ["--task", "task738", "--num_input", "5"], "unknown command-line flag '--num_input'"),
    "recipe: synthesis seed inside the mapping": Case("recipe", ["--task", "task738", "--synthesis", '{"seed": 1}'], "give 'seed' as --synthesis_seed"),
    # --------------------------------------------------- load_dataset arguments
    "load_dataset: unknown parameter": Case("load_dataset", ["task=task738", "num_input=5"], "unknown selfguide parameter(s) ['num_input']", exception=ValueError),
    "load_dataset: no task": Case("load_dataset", [], "needs a task", exception=ValueError),
    "load_dataset: num_inputs 0": Case("load_dataset", ["task=task738", "num_inputs=0"], "'num_inputs' must be an integer >= 1, got 0", exception=ValueError),
    "load_dataset: unknown preset": Case("load_dataset", ["task=task738", "name=fast"], "fast", exception=ValueError),
    "load_dataset: bad task name": Case("load_dataset", ["task=s.json"], "'../x' is not a usable task name", run_file("s.json", json.dumps(spec(task="../x"))), exception=ValueError),
    # ------------------------------------------------ damaged model and adapter
    "damaged model weights": Case("cli", ["evaluate", "--task", "task738", "--model", "{damaged_model}"], "model.safetensors: damaged or incomplete weight file"),
    "damaged adapter weights": Case("cli", ["evaluate", "--task", "task738", "--adapter", "{damaged_adapter}"], "adapter_model.safetensors: damaged or incomplete weight file"),
    "adapter folder without adapter_config.json": Case("cli", ["evaluate", "--task", "task738", "--adapter", "{empty_adapter}"], "neither adapter_config.json (an adapter) nor config.json (a model)"),
    "model folder without config.json": Case("cli", ["evaluate", "--task", "task738", "--model", "{empty_adapter}"], "has no config.json; not a transformers model"),
}  # fmt: skip


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert {case.front for case in CASES.values()} == {"cli", "recipe", "load_dataset"}


@pytest.fixture(scope="module")
def damaged(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model and an adapter whose weight files were cut short, and an adapter folder with no config."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("damaged")
    model = root / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    adapter = root / "adapter"
    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, target_modules="all-linear")
    )
    peft_model.save_pretrained(adapter)
    cut = adapter / "adapter_model.safetensors"
    cut.write_bytes(cut.read_bytes()[:100])
    empty = root / "empty"
    empty.mkdir()
    return {"damaged_model": model, "damaged_adapter": adapter, "empty_adapter": empty}


def _recipe_cli() -> Callable[[], int]:
    spec_ = importlib.util.spec_from_file_location("sft_recipe_bad_inputs", ROOT / "recipes" / "sft.py")
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module.cli


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_one_clear_line(
    name: str, tiny_model_dir: Path, damaged: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    case = CASES[name]
    work = tmp_path / "work"
    work.mkdir()
    for file_name, content in case.files.items():
        target = work / file_name
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    monkeypatch.chdir(work)
    cache = tmp_path / "datasets-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    out = work / "out"
    fill = {
        "model": str(tiny_model_dir),
        "missing_model": str(tmp_path / "no-model"),
        **{key: str(path) for key, path in damaged.items()},
    }
    args = list(case.args)
    for key, value in fill.items():
        args = [arg.replace("{" + key + "}", value) for arg in args]
    before = _files(work)
    if case.front == "load_dataset":
        from datasets import load_dataset

        import selfguide_hf  # noqa: F401  (registers the builder)

        kwargs = dict(arg.split("=", 1) for arg in args)
        kwargs = {k: int(v) if v.isdigit() else v for k, v in kwargs.items()}
        with pytest.raises(case.exception) as raised:
            load_dataset("selfguide", model=str(tiny_model_dir), cache_dir=str(cache), **kwargs)
        assert case.message in str(raised.value)
        assert len(str(raised.value).splitlines()) == 1
    else:
        if case.front == "cli":
            if "--model" not in args:
                args += ["--model", str(tiny_model_dir)]
            if args[0] != "evaluate":
                args += ["--output-dir", str(out)]
            try:
                code = cli.main(args)
            except SystemExit as exc:  # argparse refuses a value before main runs
                code = exc.code
        else:
            if "--model" not in args:
                args += ["--model", str(tiny_model_dir)]
            monkeypatch.setattr(sys, "argv", ["sft.py", *args, "--output_dir", str(out)])
            code = _recipe_cli()()
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "error" in line.lower() and "warn" not in line.lower()]
        assert code == 2, f"{name}: exit {code}\n{err[-2000:]}"
        assert len(lines) == 1, f"{name}: expected one error line, got:\n{err[-2000:]}"
        assert case.message in lines[0], f"{name}: {lines[0]!r}"
        assert "Traceback" not in err
    written = {p for p in _files(work) - before if out not in p.parents}
    assert not written, f"{name}: wrote outside the output folder: {sorted(map(str, written))}"


# ------------------------------------------------------- two runs, one folder
def test_a_second_run_into_a_held_output_folder_stops(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from selfguide_hf.run_dir import folder_lock

    out = tmp_path / "run"
    with folder_lock(out):  # another run is in there
        code = cli.main(
            ["run", "--task", "task738", "--model", str(tiny_model_dir), "--output-dir", str(out)]
        )
    err = capsys.readouterr().err
    assert code == 2 and "another run holds this folder" in err and str(out) in err
    assert sorted(p.name for p in out.iterdir()) == [".selfguide.lock"]


def test_a_second_synthesis_of_the_same_data_stops(tiny_model_dir: Path, tmp_path: Path) -> None:
    from filelock import FileLock

    from selfguide_hf.builder import SelfGuideDataset

    builder = SelfGuideDataset(
        cache_dir=str(tmp_path), task="task738", model=str(tiny_model_dir), num_inputs=2
    )
    builder.work_dir.parent.mkdir(parents=True, exist_ok=True)
    with (
        FileLock(str(builder.work_dir) + ".lock"),
        pytest.raises(RuntimeError, match="another run holds the selfguide dataset cache"),
    ):
        builder.download_and_prepare()


# ------------------------------------------- the same mistake, the same answer from both fronts
SAME_ON_BOTH_FRONTS = {
    "learning rate inf": ["--learning_rate", "inf"],
    "text in a numeric setting": ["--lora_r", "big"],
    "bf16 maybe": ["--bf16", "maybe"],
    "batch size 1.5": ["--per_device_train_batch_size", "1.5"],
    "malformed repo id": ["--push_to_hub", "true", "--hub_model_id", "not a repo"],
    "unknown method": ["--method", "dora"],
    "unknown flag": ["--num_input", "5"],
    "min pairs 0": ["--min_pairs", "0"],
    "seed inside the synthesis mapping": ["--synthesis", '{"seed": 1}'],
    "unknown synthesis parameter": ["--synthesis", '{"rounds": 4}'],
    "unknown bundled task": ["--task", "task9"],
    "missing model folder": ["--model", "{missing}"],
    "YAML list for a number": ["--config", "{yaml}"],
}


@pytest.mark.parametrize("name", sorted(SAME_ON_BOTH_FRONTS))
def test_both_fronts_give_the_same_exit_code_and_line(name: str, tmp_path: Path, monkeypatch, capsys) -> None:
    """`selfguide run` and `recipes/sft.py --evaluate true` read one parser and one error table."""
    config = tmp_path / "c.yaml"
    config.write_text("num_train_epochs: [1, 2]\n")
    fill = {"{missing}": str(tmp_path / "no-model"), "{yaml}": str(config)}
    args = [fill.get(arg, arg) for arg in SAME_ON_BOTH_FRONTS[name]]
    if "--task" not in args:
        args = ["--task", "task738", *args]
    monkeypatch.chdir(tmp_path)
    answers = []
    for front in ("cli", "recipe"):
        if front == "cli":
            code = cli.main(["run", *args])
        else:
            monkeypatch.setattr(sys, "argv", ["sft.py", *args, "--evaluate", "true"])
            code = _recipe_cli()()
        err = [line for line in capsys.readouterr().err.splitlines() if "error: " in line]
        assert len(err) == 1, f"{front}: {err}"
        line = err[0].split("error: ", 1)[1]
        answers.append((code, re.sub(r"--(\w[\w-]*)", lambda m: "--" + m.group(1).replace("-", "_"), line)))
    assert answers[0] == answers[1] and answers[0][0] == 2, answers
    assert not (tmp_path / "outputs").exists()  # refused before any folder was made
