"""Publishing a run: the adapter with its model card, the synthetic dataset with its card.

One commit per repository through `HfApi.create_repo` + `HfApi.create_commit`
(the files of a run are few and small), so what is uploaded is exactly the
list built here: no checkpoints, no pickled training arguments. Every file is
checked for the token before anything is sent, and the token is only ever
passed to `huggingface_hub`, never logged or written.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selfguide_hf.errors import PublishError

logger = logging.getLogger(__name__)

# What a trained output folder may publish; anything else (checkpoints, training_args.bin) stays local.
ADAPTER_FILES: tuple[str, ...] = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
FULL_MODEL_PATTERNS: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
)
TOKENIZER_PATTERNS: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
RUN_FILES: tuple[str, ...] = ("selfguide_run.json", "selfguide_funnel.json", "selfguide_eval.json")
DATASET_FILE = "data/train-00000-of-00001.parquet"


class HubPushError(PublishError):
    """A push that must not or cannot happen; the message never contains the token."""


def _api(token: str | None, endpoint: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def collect_folder_files(folder: str | os.PathLike[str], patterns: Iterable[str]) -> dict[str, bytes]:
    """The files of `folder` matching `patterns` (top level only), by name."""
    folder = Path(folder)
    found: dict[str, bytes] = {}
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            if path.is_file():
                found[path.name] = path.read_bytes()
    return found


def rewrite_adapter_base(
    adapter_config: bytes, base_model_id: str | None, local_paths: Iterable[str]
) -> bytes:
    """Point ``base_model_name_or_path`` at the Hub id when training used a local copy of the model.

    A local cache path in a published adapter is useless to anyone else, and
    `AutoPeftModelForCausalLM.from_pretrained` follows this field.
    """
    if not base_model_id:
        return adapter_config
    config = json.loads(adapter_config)
    current = config.get("base_model_name_or_path")
    local = {str(p) for p in local_paths}
    if current is None or current in local or str(current).startswith(("/", "~", ".")):
        config["base_model_name_or_path"] = base_model_id
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")


TEXT_SUFFIXES = (".json", ".md", ".jinja", ".txt", ".model", "")


def scrub_local_paths(files: dict[str, bytes], replacements: dict[str, str]) -> dict[str, bytes]:
    """Replace every local path of ``replacements`` in the text files by its public form (longest first).

    A pushed file must not tell the world where the run lived (home folder,
    project folders, cache paths), and a base model named by a local folder is
    useless to anyone else.
    """
    ordered = sorted(((k, v) for k, v in replacements.items() if len(k) > 1), key=lambda kv: -len(kv[0]))
    scrubbed = {}
    for name, data in files.items():
        if Path(name).suffix in TEXT_SUFFIXES:
            text = data.decode("utf-8", errors="surrogateescape")
            for local, public in ordered:
                text = text.replace(local, public)
            data = text.encode("utf-8", errors="surrogateescape")
        scrubbed[name] = data
    return scrubbed


def assert_paths_absent(files: dict[str, bytes], paths: Iterable[str]) -> None:
    """Refuse to upload any file that still holds a local path (defence in depth)."""
    needles = [p.encode("utf-8") for p in paths if len(p) > 1]
    leaking = sorted(name for name, data in files.items() if any(n in data for n in needles))
    if leaking:
        raise HubPushError(f"refusing to push: local paths remain in {leaking}")


# An absolute local path in any pushed text: /a/b..., ~/a, C:\a (URLs, relative paths and "a/b" prose do
# not match: the slash must not follow a word character, a colon, a dot or another slash).
ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~\-])(?:/(?:[\w.\-]+/)+[\w.\-]*|~/[\w.\-/]+|\b[A-Za-z]:\\[\w.\-\\]+)")
SCANNED_SUFFIXES = (".json", ".md", ".jinja", ".txt", ".yaml", ".yml")


def assert_no_absolute_paths(files: dict[str, bytes]) -> None:
    """Refuse the push when any text file still holds an absolute path, naming the file, line and path.

    Not a list of the paths the run knows of (those are scrubbed first): any absolute path at all,
    so a setting nobody thought of (a local embedding model, say) cannot leak either.
    """
    for name, data in sorted(files.items()):
        if Path(name).suffix not in SCANNED_SUFFIXES:
            continue
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            found = ABSOLUTE_PATH.search(line)
            if found:
                raise HubPushError(
                    f"refusing to push: {name}:{number} holds a local path {found.group(0)!r}; "
                    "nothing was sent (please report it: every local path should have been replaced)"
                )


def assert_token_absent(files: dict[str, bytes], token: str | None) -> None:
    """Refuse to upload any file that contains the token (defence in depth: nothing should)."""
    if not token:
        return
    needle = token.encode("utf-8")
    leaking = sorted(name for name, data in files.items() if needle in data)
    if leaking:
        raise HubPushError(f"refusing to push: the Hub token appears in {leaking}")


def _commit(
    repo_id: str,
    files: dict[str, bytes],
    *,
    repo_type: str,
    commit_message: str,
    token: str | None = None,
    private: bool | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    local_paths: dict[str, str] | None = None,
) -> str:
    """One commit of ``files`` (scrubbed of ``local_paths``, checked for the token) to a repository it creates if needed."""
    from huggingface_hub import CommitOperationAdd

    if local_paths:
        files = scrub_local_paths(files, local_paths)
        assert_paths_absent(files, local_paths)
    assert_no_absolute_paths(files)
    assert_token_absent(files, token)
    api = _api(token, endpoint)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in sorted(files.items())
    ]
    try:  # one commit: the repository gets every file or none
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message,
            repo_type=repo_type,
            revision=revision,
        )
    except Exception as exc:  # HTTP errors (auth, server), connection errors: one line, no traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubPushError(f"pushing to the {repo_type} repository {repo_id} failed: {first}") from exc
    logger.info("pushed %d file(s) to %s %s", len(files), repo_type, repo_id)
    return str(getattr(info, "commit_url", info))


def adapter_files(
    folder: str | os.PathLike[str],
    card: str,
    *,
    base_model_id: str | None = None,
    local_base_paths: Iterable[str] = (),
    extra_files: dict[str, bytes] | None = None,
) -> dict[str, bytes]:
    """Exactly what `push_adapter` uploads: weights, tokenizer, run records, ``extra_files`` (the task
    spec) and the card as README.md."""
    folder = Path(folder)
    files = collect_folder_files(folder, (*ADAPTER_FILES, *TOKENIZER_PATTERNS, *RUN_FILES))
    if "adapter_config.json" in files:
        files["adapter_config.json"] = rewrite_adapter_base(
            files["adapter_config.json"], base_model_id, local_base_paths
        )
    else:
        files.update(collect_folder_files(folder, FULL_MODEL_PATTERNS))
    weights = {"adapter_model.safetensors", "adapter_model.bin", "model.safetensors"}
    if not (weights & set(files) or any(name.startswith("model-") for name in files)):
        raise HubPushError(f"{folder}: no adapter or model weights to push; train first")
    files.update(extra_files or {})
    files["README.md"] = card.encode("utf-8")
    return files


def push_adapter(
    folder: str | os.PathLike[str],
    repo_id: str,
    card: str,
    *,
    base_model_id: str | None = None,
    local_base_paths: Iterable[str] = (),
    extra_files: dict[str, bytes] | None = None,
    commit_message: str = "Upload self-guide adapter",
    **push: Any,
) -> str:
    """Create (or reuse) a model repository and commit the adapter plus its model card; returns the commit URL.

    ``push``: ``token``, ``private``, ``endpoint``, ``local_paths`` (see `_commit`).
    """
    files = adapter_files(
        folder, card, base_model_id=base_model_id, local_base_paths=local_base_paths, extra_files=extra_files
    )
    return _commit(repo_id, files, repo_type="model", commit_message=commit_message, **push)


def dataset_files(dataset: Any, card: str) -> dict[str, bytes]:
    """The synthetic set as one parquet shard (the layout the Hub loads without a script) plus the card."""
    buffer = io.BytesIO()
    dataset.to_parquet(buffer)
    return {DATASET_FILE: buffer.getvalue(), "README.md": card.encode("utf-8")}


def push_dataset(
    dataset: Any,
    repo_id: str,
    card: str,
    *,
    commit_message: str = "Upload self-guide synthetic dataset",
    **push: Any,
) -> str:
    """Create (or reuse) a dataset repository and commit the rows plus the dataset card; returns the commit URL.

    ``push``: ``token``, ``private``, ``endpoint``, ``local_paths`` (see `_commit`).
    """
    files = dataset_files(dataset, card)
    return _commit(repo_id, files, repo_type="dataset", commit_message=commit_message, **push)
