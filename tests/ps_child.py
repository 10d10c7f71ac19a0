"""The Trainer's chief on a parameter-server cluster that lives in this process.

    python -m tests.ps_child ARGS_JSON

tf_keras's test helper starts 2 workers and 2 parameter servers as
TensorFlow servers in this process (they cannot be stopped: they end with
it). TF_CONFIG then names them and this process as the chief, and the chief
trains and exports as `run_fn` does (`distribution`, `train`,
`export_trained`). ARGS_JSON holds FnArgs' fields, as for `tests.trainer_child`.

Prints JSON: the devices of each embedding table's shards, and the trained
(split) model's predictions for the first 20 users and items of the
vocabularies, by raw ID, to compare with the exported model's.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import portpicker
from tf_keras.src.distribute import multi_worker_testing_utils


def main() -> int:
    cluster = multi_worker_testing_utils.create_in_process_cluster(num_workers=2, num_ps=2)
    cluster = {kind: list(addresses) for kind, addresses in cluster.items()}
    cluster["chief"] = [f"localhost:{portpicker.pick_unused_port()}"]
    os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})

    import tensorflow as tf
    from tfx.components.trainer.fn_args_utils import FnArgs

    from components.trainer import distribution, export_trained, train
    from recommender import features

    strategy, role = distribution(os.environ["TF_CONFIG"])
    args = FnArgs(hyperparameters=None, **json.loads(sys.argv[1]))
    trained = train(args, strategy)
    model = trained.fitted.model
    shards = {
        layer.name: [variable.device for variable in layer.embeddings.variables]
        for layer in (model.user_embedding, model.item_embedding)
    }
    users = trained.transform_output.vocabulary_by_name(features.vocabulary_name(features.USER_ID))[:20]
    items = trained.transform_output.vocabulary_by_name(features.vocabulary_name(features.ITEM_ID))[:20]
    inputs = {features.transformed_name(features.USER_ID): tf.range(len(users), dtype=tf.int64),
              features.transformed_name(features.ITEM_ID): tf.range(len(items), dtype=tf.int64)}
    predictions = {name: np.asarray(value).reshape(-1).tolist() for name, value in model(inputs).items()}
    export_trained(trained, args.serving_model_dir, role)
    print(json.dumps({
        "shards": shards, "users": [u.decode() for u in users], "items": [i.decode() for i in items],
        "predictions": predictions,
    }), flush=True)
    # The in-process servers have no way to stop but the process's end.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
