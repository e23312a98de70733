"""Reading a recipe config (YAML) against a parser: every key known, every value of its flag's type.

`TrlParser` sets YAML values as argparse defaults, which argparse never
converts or checks; here each value goes through its flag's own type first,
so a mistake names the file, the key and the value instead of failing (or
being kept as is) after synthesis.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selfguide_hf.errors import ConfigError

__all__ = ["closest", "known_keys", "load_config", "read_value"]


# Settings that were removed, with what replaced them (named in the error for a flag or YAML key).
REMOVED_SETTINGS = {
    "vllm_data_parallel_size": "vLLM's offline engine does not start with data_parallel_size here; "
    "engine replicas are --engine ray --ray-replicas N",
}


def known_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every destination of the parser (the YAML keys it accepts), with its action."""
    return {action.dest: action for action in parser._actions if action.dest not in ("help",)}


def closest(key: str, known: Iterable[str]) -> str:
    """' (did you mean ...?)' for a mistyped key, what replaced a removed one, or ''."""
    if key in REMOVED_SETTINGS:
        return f": it was removed ({REMOVED_SETTINGS[key]})"
    known = list(known)
    head = key.split("_")[0] + "_"
    # Same first word first: "lora_rank" should suggest "lora_r", not "local_rank".
    match = difflib.get_close_matches(key, [k for k in known if k.startswith(head)], n=1, cutoff=0.4)
    match = match or difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def read_value(action: argparse.Action, key: str, value: Any, source: str) -> Any:
    """``value`` as the flag's type would read it from the command line; a wrong type names the key."""
    if value is None or action.type is None or isinstance(value, dict):
        return value
    many = action.nargs in ("+", "*")
    if isinstance(value, (list, tuple)) and not many:
        raise ConfigError(f"{source}: key '{key}': expected one value, got a list {list(value)!r}")
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    read = []
    for item in values:
        if isinstance(item, (dict, list)):
            raise ConfigError(f"{source}: key '{key}': expected a single value, got {item!r}")
        text = ("true" if item else "false") if isinstance(item, bool) else str(item)
        try:  # through the text, as on a command line: 1.5 is no int, "maybe" no bool
            read.append(action.type(text))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"{source}: key '{key}': cannot read {item!r}: {exc}") from None
    if action.choices is not None:
        for item in read:
            if item not in action.choices:
                raise ConfigError(
                    f"{source}: key '{key}': {item!r} is not one of {sorted(map(str, action.choices))}"
                )
    return read if many and isinstance(value, (list, tuple)) else read[0]


def load_config(path: str | os.PathLike[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The YAML file's settings, each read as its flag; its ``env`` mapping is exported first."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML: {first}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of argument names to values")
    env = config.pop("env", None)
    if env is not None:
        if not isinstance(env, dict):
            raise ConfigError(f"{path}: key 'env': expected a mapping of environment variables")
        for name, value in env.items():
            os.environ[str(name)] = str(value)
    known = known_keys(parser)
    for key in config:
        if key not in known:
            raise ConfigError(f"{path}: unknown key '{key}'{closest(key, known)}")
    return {key: read_value(known[key], key, value, str(path)) for key, value in config.items()}
