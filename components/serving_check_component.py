"""`ServingCheck`: the TFX component that verifies a pushed model before the run reports it.

It runs `components.serving_check` in a fresh process on the version the
Pusher just wrote. When the check fails it removes that version, so the
serving directory falls back to the previous one, and fails the run.
"""

import shutil

from tfx import v1 as tfx

from components.serving_check import ServingCheckError, check_in_fresh_process


def verify_push(destination: str) -> dict:
    """`check_in_fresh_process` on a pushed version; removes that version if it fails.

    Never leaves a model that cannot answer where a server would pick it up:
    with the version gone, the serving directory's previous one is the newest.
    """
    try:
        return check_in_fresh_process(destination)
    except ServingCheckError:
        shutil.rmtree(destination, ignore_errors=True)
        raise


@tfx.dsl.components.component
def ServingCheck(  # pylint: disable=invalid-name
    pushed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.PushedModel],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.InfraBlessing],
) -> None:
    """Checks the version the Pusher just pushed (if any) in a fresh process.

    `blessing` is blessed (1) once the pushed model answered its sample
    requests; 0 when nothing was pushed. A failed check removes the pushed
    version and raises.
    """
    destination = pushed_model.get_string_custom_property("pushed_destination")
    if not pushed_model.get_int_custom_property("pushed") or not destination:
        blessing.set_int_custom_property("blessed", 0)
        return
    result = verify_push(destination)
    blessing.set_int_custom_property("blessed", 1)
    blessing.set_string_custom_property("checked_model", destination)
    blessing.set_int_custom_property("checked_requests", int(result["requests"]))
