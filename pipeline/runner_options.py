"""What the runners (run_local.py, run_kubeflow.py, benchmarks) share: option values and errors.

Library code raises `OptionError` for a bad option; only a runner's `main`
turns it into a message and an exit status.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recommender.config import ModelConfig


class OptionError(ValueError):
    """A command-line or config option that cannot be used; the message names the option."""


def json_value(value: str, flag: str) -> Any:
    """The JSON in `value`: inline when it starts with "{" or "[", else the file at that path.

    Only a path is looked up on disk: inline JSON can be longer than a file name
    may be. Errors are OptionError naming `flag`.
    """
    if value.lstrip().startswith(("{", "[")):
        text, source = value, "inline JSON"
    else:
        try:
            text, source = Path(value).read_text(), value
        except OSError as error:
            raise OptionError(f"{flag}: {value}: neither inline JSON nor a readable file ({error.strerror})") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise OptionError(f"{flag}: {source} is not valid JSON ({error})") from error


def model_config_fields(value: str | None, flag: str = "--model-config") -> dict[str, Any]:
    """ModelConfig fields from inline JSON or a JSON file's path (None: none)."""
    if value is None:
        return {}
    fields = json_value(value, flag)
    if not isinstance(fields, dict):
        raise OptionError(f"{flag}: expected a JSON object of ModelConfig fields")
    return fields


def model_config(value: str | None, flag: str = "--model-config", **overrides: Any) -> ModelConfig:
    """The ModelConfig of `value` (see model_config_fields) with `overrides` (None values skipped) on top."""
    fields = {**model_config_fields(value, flag), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return ModelConfig.from_json_dict(fields)
    except (TypeError, ValueError) as error:
        raise OptionError(f"{flag}: {error}") from error
