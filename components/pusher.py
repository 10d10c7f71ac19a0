"""The Pusher's executor: publishes a checked model into the serving folder atomically.

TFX's own Pusher executor copies the model straight into `<base>/<unix time>`
(visible to TF Serving while half-copied) and skips the copy, yet records a
push, when that folder already exists. This one keeps TFX's blessing checks
and artifact properties, requires the `ServingCheck` blessing, and hands off
through `components.publish`: staged under a name TF Serving ignores, the
staged bytes verified against the checked digest, renamed to a new, higher
version. It does not archive a second copy under the PushedModel's URI: the
artifact's `pushed_destination` is the published version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components import mlmd_names, publish


def _serving_dir(exec_properties: dict[str, Any]) -> Path:
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
    if destination.WhichOneof("destination") != "filesystem":
        raise ValueError("this Pusher publishes to a file system destination only")
    return Path(destination.filesystem.base_directory)


class Executor(pusher_executor.Executor):
    """Publishes only a model blessed by the Evaluator and by `ServingCheck`, byte for byte as checked."""

    def Do(  # noqa: N802 (TFX's name)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        serving_dir = _serving_dir(exec_properties)
        if not input_dict.get(standard_component_specs.INFRA_BLESSING_KEY):
            raise ValueError("the Pusher needs ServingCheck's infra_blessing: it publishes checked models only")
        if not self.CheckBlessing(input_dict):
            removed = ()
            if serving_dir.is_dir():  # nothing to clean where nothing was ever published
                with publish.publish_lock(serving_dir):
                    removed = publish.remove_stale_staging(serving_dir)
            self._record_removed(pushed, removed)
            self._MarkNotPushed(pushed)
            return
        infra = artifact_utils.get_single_instance(input_dict[standard_component_specs.INFRA_BLESSING_KEY])
        model_dir = self.GetModelPath(input_dict)
        checked = infra.get_string_custom_property(mlmd_names.CHECKED_MODEL)
        if Path(checked) != Path(model_dir):
            raise ValueError(f"ServingCheck checked {checked!r}, not the model to push {model_dir!r}")
        published = publish.stage_and_publish(
            Path(model_dir), serving_dir, infra.get_string_custom_property(mlmd_names.CHECKED_DIGEST)
        )
        self._record_removed(pushed, published.removed_staging)
        self._MarkPushed(pushed, pushed_destination=str(published.path), pushed_version=str(published.version))
        logging.info("Model published to %s.", published.path)

    @staticmethod
    def _record_removed(pushed: types.Artifact, removed: tuple[str, ...]) -> None:
        for path in removed:
            logging.warning("Removed a stale staging folder left by a killed publisher: %s", path)
        pushed.set_string_custom_property(mlmd_names.REMOVED_STAGING, json.dumps(list(removed)))
