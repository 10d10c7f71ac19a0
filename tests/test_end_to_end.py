"""Five real LocalDagRunner runs on small generated data, checked through ML Metadata.

Run 1 must bless and publish a model that loads without project code and
serves known and unknown IDs from both signatures; a watcher polling the
serving folder every 20 ms sees it appear only after its serving check passed,
with the checked bytes; its ranking is measured against popularity and its
batch recommendations are the published model's; its Trainer refits on the
validation rows, as by default. Run 2 trains without the refit and demands an
AUC no model can reach: it must not be blessed, and writes no recommendations. Run
3's blessed model fails the serving check (its timeout is too short): nothing
is published and the run fails naming why. Run 4 is judged against run 1's
model, the one being served, not run 3's rejected one. Run 5 demands an NDCG
no model reaches: the ranking gate refuses it. In runs 2, 3 and 5 the serving
folder is left as is. `inspect_metadata.py` answers runs, models and lineage
from the store of the first four.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration.metadata import sqlite_metadata_connection_config

from components import mlmd_names, ranking
from components.ranking import RankingThreshold
from components.ranking_job import read_interactions
from data.synthetic import SyntheticSpec, write_csv
from pipeline.config import HeadThreshold, PipelineConfig, VocabularyCaps
from recommender import features, heads
from recommender.model import ModelConfig
from recommender.recommend import padded
from results.metadata import OUTPUT, MetadataReader
from results.summary import format_summary
from run_local import run
from tests.support import COMPONENT_IDS, Watcher, served_versions, tree_digest

# The runs here also write batch recommendations after each publication.
NODES = COMPONENT_IDS | {"BatchRecommender"}
# The second run keeps this many user IDs of the 300 (and every one of the 200 items).
USER_CAP = 250

pytestmark = pytest.mark.slow

# A constant predictor gets AUC 0.5 and RMSE ~0.275 on this data: both bounds exclude it.
THRESHOLDS = {
    features.BINARY_RATING: HeadThreshold("AUC", True, bound=0.65, max_regression=0.05),
    features.PURCHASE_PROBABILITY: HeadThreshold(
        "RootMeanSquaredError", False, bound=0.25, max_regression=0.05
    ),
}

LOAD_AND_PREDICT = """
import json, sys
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
users, items = json.loads(sys.argv[2])
by_ids = loaded.signatures["serving_default"](
    user_id=tf.constant(users), item_id=tf.constant(items))
examples = [tf.train.Example(features=tf.train.Features(feature={
    "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[u.encode()])),
    "item_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[i.encode()])),
})).SerializeToString() for u, i in zip(users, items)]
by_examples = loaded.signatures["serving_tf_example"](examples=tf.constant(examples))
print(json.dumps({name: {k: v.numpy().tolist() for k, v in out.items()}
                  for name, out in (("ids", by_ids), ("examples", by_examples))}))
"""




def _store(config):
    return metadata_store.MetadataStore(
        sqlite_metadata_connection_config(str(config.metadata_path))
    )


def _executions_per_node(config):
    store = _store(config)
    counts = {}
    for context in store.get_contexts_by_type("node"):
        node = context.name.split(".", 1)[1]
        counts[node] = len(store.get_executions_by_context(context.id))
    return counts


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = write_csv(SyntheticSpec(num_users=300, num_items=200, num_interactions=12_000),
                     root / "data" / "interactions.csv")
    config = PipelineConfig(
        data_path=data,
        output_dir=root / "out",
        model=ModelConfig(epochs=10),
        thresholds=THRESHOLDS,
        batch_recommendations_k=5,
    )
    with Watcher(config.serving_dir) as watcher:
        summary, error = run(config)
    assert error is None, error
    return config, summary, _executions_per_node(config), served_versions(config.serving_dir), watcher.seen


@pytest.fixture(scope="module")
def second_run(first_run):
    config = dataclasses.replace(
        first_run[0],
        model=dataclasses.replace(first_run[0].model, refit=False),
        thresholds={**THRESHOLDS, features.BINARY_RATING: HeadThreshold("AUC", True, 0.9999, 0.0)},
        vocabulary=VocabularyCaps(top_k=USER_CAP),
    )
    summary, error = run(config)
    assert error is None, error
    return config, summary


@pytest.fixture(scope="module")
def third_run(first_run, second_run):
    """A blessed model whose serving check cannot finish in time: rejected, never published."""
    config = dataclasses.replace(
        second_run[0], model=first_run[0].model, thresholds=THRESHOLDS, serving_check_timeout_s=0.5,
        vocabulary=first_run[0].vocabulary,
    )
    with Watcher(config.serving_dir) as watcher:
        summary, error = run(config)
    return config, summary, error, watcher.seen


@pytest.fixture(scope="module")
def fourth_run(third_run):
    # Ranked as a Beam job, as training splits past the in-process size are.
    config = dataclasses.replace(third_run[0], serving_check_timeout_s=300.0, ranking_in_process_mib=0.0)
    # What a batch job killed mid-write leaves: the next job removes it.
    killed = config.recommendations_dir / ".staging-1-killed"
    killed.mkdir()
    (killed / "part-00000-of-00001.parquet").write_bytes(b"PAR1 half-written")
    summary, error = run(config)
    assert error is None, error
    return config, summary


def _model_of_run(store, run_id):
    """The Model artifact the Trainer of `run_id` produced."""
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    for execution in store.get_executions_by_context(context.id):
        for event in store.get_events_by_execution_ids([execution.id]):
            if event.type == event.OUTPUT:
                (artifact,) = store.get_artifacts_by_id([event.artifact_id])
                if store.get_artifact_types_by_id([artifact.type_id])[0].name == "Model":
                    return artifact.id
    raise LookupError(run_id)


def _evaluator_baseline(store, run_id):
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    for execution in store.get_executions_by_context(context.id):
        for event in store.get_events_by_execution_ids([execution.id]):
            keys = {step.key for step in event.path.steps if step.HasField("key")}
            if event.type == event.INPUT and "baseline_model" in keys:
                return event.artifact_id
    return None


def test_every_component_executed_once(first_run):
    _, summary, executions, _, _ = first_run
    assert executions == {node: 1 for node in NODES}
    assert {c.component_id for c in summary.components} == NODES
    assert {c.state for c in summary.components} == {"complete"}


def test_model_is_blessed_and_pushed_with_both_heads_measured(first_run):
    config, summary, _, served, _ = first_run
    assert summary.blessed is True
    assert summary.failed_thresholds == ()
    assert summary.metrics[features.BINARY_RATING]["auc"] >= 0.65
    assert summary.metrics[features.PURCHASE_PROBABILITY]["root_mean_squared_error"] <= 0.25
    (version,) = served
    assert summary.pushed_to == str(config.serving_dir / version)
    assert (config.serving_dir / version / "saved_model.pb").is_file()


def test_ranking_is_measured_against_popularity_and_recorded(first_run):
    config, summary, _, _, _ = first_run
    overall = summary.ranking["slices"]["overall"]
    assert summary.ranking["k"] == 10 and set(overall) == {"model", "popularity"}
    assert overall["model"]["users"] == overall["popularity"]["users"] > 100
    assert 0 < overall["model"]["hit_rate_at_10"] <= 1
    assert any(name.startswith("user_activity:") for name in summary.ranking["slices"])
    store = _store(config)
    (evaluation,) = store.get_artifacts_by_type(mlmd_names.RANKING_EVALUATION_TYPE)
    recorded = evaluation.custom_properties
    # The store gives a float custom property back with six significant digits.
    assert recorded["ndcg_at_10"].double_value == pytest.approx(overall["model"]["ndcg_at_10"], rel=1e-5)
    assert recorded["popularity_recall_at_10"].double_value == pytest.approx(
        overall["popularity"]["recall_at_10"], rel=1e-5
    )
    assert recorded[mlmd_names.BLESSED].int_value == 1


def _ranking_inputs(config, run_id):
    """(examples, model dir, training splits, recorded ranking.json, where it ranked) of the run's RankingEvaluator."""
    store = _store(config)
    execution = _run_executions(store, run_id)[0]["RankingEvaluator"]
    inputs = _inputs(store, execution.id)
    (evaluation,) = [store.get_artifacts_by_id([e.artifact_id])[0]
                     for e in store.get_events_by_execution_ids([execution.id]) if e.type == e.OUTPUT]
    splits = json.loads(execution.custom_properties["training_splits"].string_value)
    with open(os.path.join(evaluation.uri, mlmd_names.RANKING_FILE)) as f:
        recorded = json.load(f)
    model_dir = os.path.join(inputs["model"][0].uri, "Format-Serving")
    return (inputs["examples"][0].uri, model_dir, splits, recorded,
            evaluation.custom_properties[mlmd_names.RANKED_ON].string_value)


def _in_process(examples, model_dir, splits, fraction=1.0):
    import itertools

    from components import ranking_job

    signatures = tf.saved_model.load(model_dir).signatures
    return ranking.evaluate(
        itertools.chain.from_iterable(read_interactions(examples, split) for split in splits),
        read_interactions(examples, "eval"),
        lambda users, seen, histories: ranking_job.model_top(signatures, users, seen, 10, histories),
        None, 10, features.DEFAULT_TIER_THRESHOLDS, fraction,
    )


def _on_beam(examples, model_dir, splits, output, beam_args, fraction=1.0):
    import apache_beam as beam

    from components import ranking_job
    from recommender import recommend

    with beam.Pipeline(argv=list(beam_args)) as pipeline:
        ranking_job.add_evaluation(pipeline, examples, splits, "eval", model_dir, None, 10,
                                   features.DEFAULT_TIER_THRESHOLDS, recommend.MAX_USERS_PER_CALL, str(output),
                                   fraction)
    return ranking_job.read_summaries(str(output), [ranking.MODEL, ranking.POPULARITY], 10)


def _assert_same_figures(got, expected, tolerance):
    assert set(got) == set(expected)
    for slice_name, rankers in expected.items():
        assert set(got[slice_name]) == set(rankers), slice_name
        for ranker, metrics in rankers.items():
            assert got[slice_name][ranker]["users"] == metrics["users"], (slice_name, ranker)
            for key, value in metrics.items():
                assert abs(got[slice_name][ranker][key] - value) <= tolerance, (slice_name, ranker, key)


def test_the_ranking_job_on_two_worker_processes_gives_the_in_process_figures(first_run, tmp_path):
    """The RankingEvaluator ranked run 1's small splits in its own process; the same evaluation as a
    Beam job on two worker processes gives every slice's figures to 1e-9."""
    from pipeline import beam

    examples, model_dir, splits, recorded, ranked_on = _ranking_inputs(first_run[0], first_run[1].run_id)
    assert ranked_on == "process" and recorded["sample"] == 1.0
    assert {ranking.OVERALL, ranking.KNOWN} <= set(recorded["slices"])
    got = _on_beam(examples, model_dir, splits, tmp_path / "job", beam.beam_pipeline_args(beam.MULTI_PROCESSING, 2))
    _assert_same_figures(got, recorded["slices"], 1e-9)


def test_a_sampled_ranking_with_new_users_gives_the_same_figures_on_beam_and_in_process(first_run, tmp_path):
    """Run 1's splits, with 60 new users added to `eval` (each with 6 interactions, for the fold-in
    slice), half the users sampled by their ID: the Beam job and `ranking.evaluate` judge the same
    users and give the same figures in every slice."""
    import shutil

    from pipeline import beam

    examples, model_dir, splits, recorded, _ = _ranking_inputs(first_run[0], first_run[1].run_id)
    copied = tmp_path / "examples"
    for split in splits:
        shutil.copytree(os.path.join(examples, f"Split-{split}"), copied / f"Split-{split}")
    shutil.copytree(os.path.join(examples, "Split-eval"), copied / "Split-eval")
    items = sorted({item for _, item, *_ in read_interactions(examples, "train")})
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(copied / "Split-eval" / "new-users.gz"), "GZIP") as writer:
        for user in range(60):
            for step in range(6):
                writer.write(_interaction(f"new-{user}", items[rng.integers(len(items))].decode(), int(step % 3 > 0),
                                          10**10 + step))
    sampled = _in_process(str(copied), model_dir, splits, fraction=0.5)
    everyone = _in_process(str(copied), model_dir, splits)
    assert ranking.FOLD_IN in sampled
    for slice_name in (ranking.OVERALL, ranking.FOLD_IN):
        users = everyone[slice_name][ranking.MODEL]["users"]
        assert 0.3 * users < sampled[slice_name][ranking.MODEL]["users"] < 0.7 * users
    got = _on_beam(str(copied), model_dir, splits, tmp_path / "job", beam.beam_pipeline_args(beam.IN_MEMORY), 0.5)
    _assert_same_figures(got, sampled, 1e-9)


def _interaction(user, item, liked, timestamp):
    return tf.train.Example(features=tf.train.Features(feature={
        features.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[user.encode()])),
        features.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[item.encode()])),
        features.BINARY_RATING: tf.train.Feature(int64_list=tf.train.Int64List(value=[liked])),
        features.TIMESTAMP: tf.train.Feature(int64_list=tf.train.Int64List(value=[timestamp])),
    })).SerializeToString()


def test_batch_recommendations_are_the_published_models_top_k(first_run):
    import pyarrow.parquet as pq

    config, summary, _, _, _ = first_run
    version = os.path.basename(summary.pushed_to.rstrip("/"))
    assert summary.recommendations_at == str(config.recommendations_dir / version)
    table = pq.read_table(summary.recommendations_at).to_pandas()
    assert table.groupby("user_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4, 5]).all()
    store = _store(config)
    (transform_graph,) = store.get_artifacts_by_type("TransformGraph")
    users = tft.TFTransformOutput(transform_graph.uri).vocabulary_by_name("user_id_vocab")
    assert sorted(table["user_id"].unique()) == sorted(u.decode() for u in users)
    (recommendations,) = store.get_artifacts_by_type(mlmd_names.RECOMMENDATIONS_TYPE)
    (event,) = [e for e in store.get_events_by_artifact_ids([recommendations.id]) if e.type == e.OUTPUT]
    inputs = _inputs(store, event.execution_id)
    # Each user's training items (both splits: the model was refitted) are the request's history.
    seen = {}
    for split in ("train", "validation"):
        for user, item, *_ in read_interactions(inputs["examples"][0].uri, split):
            seen.setdefault(user.decode(), set()).add(item)
    some = sorted(table["user_id"].unique())[:3]
    answer = tf.saved_model.load(summary.pushed_to).signatures["recommend_from_history"](
        user_id=tf.constant(some), history=tf.constant(padded([sorted(seen[u]) for u in some])), k=tf.constant(5)
    )
    for row, user in enumerate(some):
        mine = table[table["user_id"] == user].sort_values("rank")
        assert list(mine["item_id"]) == [i.decode() for i in answer["item_id"].numpy()[row]]
        assert not {i.encode() for i in mine["item_id"]} & seen[user]
        np.testing.assert_allclose(mine["score"], answer["score"].numpy()[row], rtol=1e-5, atol=1e-5)
    # Lineage: the table's artifact was made from the published model.
    assert recommendations.custom_properties[mlmd_names.RECOMMENDED_ROWS].int_value == len(table)
    (pushed,) = inputs["pushed_model"]
    assert pushed.custom_properties[mlmd_names.PUSHED_DESTINATION].string_value == summary.pushed_to
    # The published version's table, and nothing else (no staging left).
    assert [p.name for p in config.recommendations_dir.iterdir() if p.name != ".publish.lock"] == [version]


def _inputs(store, execution_id):
    """input key -> the execution's input artifacts."""
    out = {}
    for event in store.get_events_by_execution_ids([execution_id]):
        if event.type == event.INPUT:
            key = next(step.key for step in event.path.steps if step.HasField("key"))
            out.setdefault(key, []).extend(store.get_artifacts_by_id([event.artifact_id]))
    return out


def _split_rows(artifact, split):
    files = tf.io.gfile.glob(os.path.join(artifact.uri, f"Split-{split}", "*.gz"))
    return [
        tf.train.Example.FromString(r).features.feature
        for r in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator()
    ]


def _run_executions(store, run_id):
    """(node id -> the run's execution, node id -> its recorded string properties)."""
    index = MetadataReader(store)
    run_context = store.get_context_by_type_and_name("pipeline_run", run_id)
    executions = {index.node_id(e.id): e for e in store.get_executions_by_context(run_context.id)}
    recorded = {
        node: {k: v.string_value for k, v in e.custom_properties.items()} for node, e in executions.items()
    }
    return executions, recorded


def test_no_row_of_the_evaluators_split_reaches_the_trainer(first_run):
    """Proved from ML Metadata (what each component recorded reading) and from the
    files: the Trainer's inputs hold the train and validation rows and nothing
    else (it validates on the validation rows, then refits on both), the
    Evaluator reads the eval split, and eval rows are strictly later."""
    config, summary, _, _, _ = first_run
    store = _store(config)
    index = MetadataReader(store)
    executions, recorded = _run_executions(store, summary.run_id)
    trainer_splits = (
        json.loads(recorded["Trainer"]["train_args"])["splits"] + json.loads(recorded["Trainer"]["eval_args"])["splits"]
    )
    assert trainer_splits == ["train", "validation", "validation"]
    assert json.loads(recorded["Evaluator"]["example_splits"]) == ["eval"]
    assert json.loads(recorded["Transform"]["splits_config"]) == {"analyze": ["train", "validation"]}
    (raw,) = _inputs(store, executions["Transform"].id)["examples"]
    assert index.producer(raw.id) == executions["ExampleGen"].id
    # Transform writes no transformed rows: the Trainer reads ExampleGen's, the Evaluator too.
    types = {index.type_name(a) for a in index.events(executions["Transform"].id, OUTPUT)}
    assert types == {"TransformGraph", "TransformCache"}
    assert [a.id for a in _inputs(store, executions["Trainer"].id)["examples"]] == [raw.id]
    assert [a.id for a in _inputs(store, executions["Evaluator"].id)["examples"]] == [raw.id]

    def keys(rows):
        return {
            (f["user_id"].bytes_list.value[0], f["item_id"].bytes_list.value[0], f["timestamp"].int64_list.value[0])
            for f in rows
        }

    raw_rows = {split: _split_rows(raw, split) for split in ("train", "validation", "eval")}
    assert all(raw_rows[split] for split in trainer_splits)
    trained_on = keys(raw_rows["train"]) | keys(raw_rows["validation"])
    assert not trained_on & keys(raw_rows["eval"])
    stamps = {split: [f["timestamp"].int64_list.value[0] for f in rows] for split, rows in raw_rows.items()}
    assert max(stamps["train"]) < min(stamps["validation"]) <= max(stamps["validation"]) < min(stamps["eval"])
    assert [(s.name, s.rows) for s in summary.splits] == [(n, len(r)) for n, r in raw_rows.items()]
    assert [s.readers for s in summary.splits] == [
        ("Transform (analyze)", "Trainer (fit)"), ("Transform (analyze)", "Trainer (fit, validate)"),
        ("Evaluator (judge)",),
    ]


def test_the_watcher_saw_only_the_checked_model_and_only_after_its_check(first_run):
    config, summary, _, served, seen = first_run
    (blessing,) = _store(config).get_artifacts_by_type("InfraBlessing")
    assert blessing.custom_properties[mlmd_names.BLESSED].int_value == 1
    checked = blessing.custom_properties[mlmd_names.CHECKED_DIGEST].string_value
    assert set(seen) == set(served)
    for version, (first_seen, digest) in seen.items():
        assert digest == checked == served[version]
        assert first_seen * 1000 >= blessing.create_time_since_epoch


def test_pushed_model_serves_known_and_unknown_ids_in_a_fresh_process(first_run):
    config, _, _, served, _ = first_run
    (version,) = [config.serving_dir / v for v in served]
    users = ["1", "2", "no-such-user", "1", "ünïcødé"]
    items = ["1", "no-such-item", "3", "2", "4"]
    out = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(version), json.dumps([users, items])],
        check=True, capture_output=True, text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for head in heads.NAMES:
        by_ids = np.asarray(result["ids"][head])
        by_examples = np.asarray(result["examples"][head])
        assert by_ids.shape == (len(users), 1)
        assert np.all(np.isfinite(by_ids))
        np.testing.assert_allclose(by_ids, by_examples, atol=1e-6)
    liked = np.asarray(result["ids"][features.BINARY_RATING])
    assert np.all((liked > 0) & (liked < 1))


def test_capped_vocabularies_report_the_dropped_ids_and_every_component_still_runs(first_run, second_run):
    (_, first, *_), (_, second) = first_run, second_run
    assert first.vocabularies[features.USER_ID]["dropped"] is None  # no cap, nothing counted again
    users, items = second.vocabularies[features.USER_ID], second.vocabularies[features.ITEM_ID]
    assert users["ids"] == USER_CAP < users["distinct"] and users["dropped"] == users["distinct"] - USER_CAP
    assert items["ids"] == items["distinct"] < USER_CAP and items["dropped"] == 0
    assert f"user_id {USER_CAP} IDs ({users['dropped']} of {users['distinct']} dropped by the caps)" in (
        format_summary(second)
    )
    assert all(c.state == "complete" for c in second.components if c.component_id != "Pusher")
    assert second.ranking["slices"]["overall"]["model"]["users"] > 0


def test_unmeetable_threshold_blocks_the_push_and_keeps_the_served_model(first_run, second_run):
    first_config, _, _, served_before, _ = first_run
    _, summary = second_run
    assert summary.blessed is False
    assert any("binary_rating/auc" in f for f in summary.failed_thresholds)
    assert summary.pushed_to is None
    assert served_versions(first_config.serving_dir) == served_before


def test_a_run_that_publishes_nothing_writes_no_recommendations(first_run, second_run):
    config, summary = second_run
    assert summary.recommendations_at is None
    first, second = sorted(_store(config).get_artifacts_by_type(mlmd_names.RECOMMENDATIONS_TYPE), key=lambda a: a.id)
    assert second.custom_properties[mlmd_names.RECOMMENDED_USERS].int_value == 0
    assert [p.name for p in config.recommendations_dir.iterdir() if p.name != ".publish.lock"] == [
        os.path.basename(first_run[1].pushed_to.rstrip("/"))
    ]


def test_the_refit_learns_from_the_validation_rows_too_and_without_it_they_only_validate(first_run, second_run):
    """Run 1 refits (the default): Transform analyses the validation rows too (its
    vocabulary holds every user of both splits) and the ranking leaves them out as
    training items. Run 2 does not refit: they only validate (and its user vocabulary is capped)."""
    expected = {
        True: (["train", "validation"], ("Transform (analyze)", "Trainer (fit, validate)")),
        False: (["train"], ("Trainer (validate)",)),
    }
    for config, summary in (first_run[:2], second_run):
        training_splits, validation_readers = expected[config.model.refit]
        store = _store(config)
        executions, recorded = _run_executions(store, summary.run_id)
        assert json.loads(recorded["Transform"]["splits_config"]) == {"analyze": training_splits}
        assert json.loads(recorded["Trainer"]["train_args"])["splits"] == training_splits
        assert json.loads(recorded["Trainer"]["eval_args"])["splits"] == ["validation"]
        assert json.loads(recorded["RankingEvaluator"]["training_splits"]) == training_splits
        assert json.loads(recorded["Evaluator"]["example_splits"]) == ["eval"]
        assert [s.readers for s in summary.splits][1] == validation_readers
        inputs = _inputs(store, executions["Trainer"].id)
        (raw,), (graph,) = inputs["examples"], inputs["transform_graph"]
        users = set(tft.TFTransformOutput(graph.uri).vocabulary_by_name("user_id_vocab"))
        analysed = {f["user_id"].bytes_list.value[0] for split in training_splits for f in _split_rows(raw, split)}
        if config.vocabulary.top_k is None:
            assert users == analysed
        else:  # the capped run: its most frequent users, and the count of all it analysed
            assert users < analysed and len(users) == config.vocabulary.top_k
            assert summary.vocabularies[features.USER_ID]["distinct"] == len(analysed)


def test_a_blessed_model_that_fails_the_serving_check_is_never_published(first_run, third_run):
    _, _, _, served_before, _ = first_run
    config, summary, error, seen = third_run
    assert error is not None and "did not finish within 0.5 s" in str(error)
    assert summary.blessed is True and summary.pushed_to is None
    states = {c.component_id: c for c in summary.components}
    assert states["ServingCheck"].state == "FAILED"
    assert "did not finish within 0.5 s" in states["ServingCheck"].failure_reason
    assert "Pusher" not in states
    assert set(seen) == set(served_before)
    assert served_versions(config.serving_dir) == served_before


def _examples_of_run(store, run_id):
    """The URI of the Examples artifact ExampleGen wrote in `run_id`."""
    index = MetadataReader(store)
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    for execution in store.get_executions_by_context(context.id):
        if index.node_id(execution.id) == "ExampleGen":
            (examples,) = index.events(execution.id, metadata_store_pb2.Event.OUTPUT)
            return examples.uri
    raise LookupError(run_id)


def test_the_same_data_config_and_seed_give_the_same_files_and_metrics(first_run, fourth_run):
    """Runs 1 and 4 share data, configuration and seed: ExampleGen writes the same
    bytes (split and order), so the Trainer fits the same model."""
    store = _store(fourth_run[0])
    first, fourth = (_examples_of_run(store, run[1].run_id) for run in (first_run, fourth_run))
    for split in ("train", "validation", "eval"):
        assert tree_digest(os.path.join(first, f"Split-{split}")) == tree_digest(os.path.join(fourth, f"Split-{split}"))
    for head, values in first_run[1].metrics.items():
        for name, value in values.items():
            assert fourth_run[1].metrics[head][name] == pytest.approx(value, abs=1e-4), (head, name)


def test_the_rejected_model_is_not_the_next_baseline(first_run, third_run, fourth_run):
    config, summary = fourth_run
    store = _store(config)
    assert _evaluator_baseline(store, summary.run_id) == _model_of_run(store, first_run[1].run_id)
    assert _model_of_run(store, third_run[1].run_id) != _model_of_run(store, first_run[1].run_id)
    assert summary.blessed is True
    versions = served_versions(config.serving_dir)
    assert len(versions) == 2 and summary.pushed_to == str(config.serving_dir / max(versions))


def test_the_next_run_is_ranked_against_the_served_model_and_writes_its_own_table(fourth_run):
    config, summary = fourth_run
    assert set(summary.ranking["slices"]["overall"]) == {"model", "popularity", "baseline_model"}
    # Ranked as a Beam job: the same figures as in process.
    examples, model_dir, splits, recorded, ranked_on = _ranking_inputs(config, summary.run_id)
    assert ranked_on == "beam"
    expected = _in_process(examples, model_dir, splits)
    _assert_same_figures({name: {r: v for r, v in rankers.items() if r != ranking.BASELINE}
                          for name, rankers in recorded["slices"].items()}, expected, 1e-9)
    # Every published version has its table, and nothing else is there: the killed job's staging is gone.
    assert sorted(p.name for p in config.recommendations_dir.iterdir() if p.name != ".publish.lock") == sorted(
        served_versions(config.serving_dir)
    )
    assert summary.recommendations_at == str(config.recommendations_dir / os.path.basename(summary.pushed_to.rstrip("/")))


def test_an_anomaly_stops_the_run_before_transform(tmp_path):
    data = write_csv(SyntheticSpec(num_interactions=2_000), tmp_path / "data" / "bad.csv")
    lines = data.read_text().splitlines()
    user, item, stamp, _, prob = lines[5].split(",")
    lines[5] = ",".join([user, item, stamp, "7", prob])  # binary_rating must be 0 or 1
    data.write_text("\n".join(lines) + "\n")
    config = PipelineConfig(data_path=data, output_dir=tmp_path / "out")
    summary, error = run(config)
    assert error is not None
    assert "bad.csv" in str(error)
    assert "column 'binary_rating'" in str(error)
    assert "Out-of-range" in str(error)
    states = {c.component_id: c.state for c in summary.components}
    assert states["ExampleValidator"] == "complete"  # anomalies recorded in ML Metadata
    assert states["DataValidationGate"] == "FAILED"
    assert "Transform" not in states and "Trainer" not in states
    assert not config.serving_dir.exists()


def test_report_shows_metrics_plots_baseline_and_verdict(first_run, second_run, tmp_path):
    from results.report import write_report

    first = write_report(first_run[1], tmp_path / "first").read_text()
    assert "BLESSED" in first and "NOT blessed" not in first
    second_path = write_report(second_run[1], tmp_path / "second")
    second = second_path.read_text()
    assert "NOT blessed" in second and "binary_rating/auc" in second
    assert "<th>baseline</th><th>difference</th>" in second  # compared with the blessed model
    assert "user_activity=" in second and "item_popularity=" in second  # slice table
    assert "<h2>Ranking (top 10)</h2>" in second and "popularity<br>ndcg_at_10" in second
    assert "baseline_model<br>recall_at_10" in second and "user_activity:" in second
    for head in heads.NAMES:
        png = second_path.parent / f"{head}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000


def test_report_history_plots_the_thresholded_metrics_and_split_rows_of_every_run(
    first_run, second_run, third_run, fourth_run, tmp_path
):
    from ml_metadata.metadata_store import metadata_store

    from results.report import write_report
    from results.summary import history

    config = fourth_run[0]
    runs = history(metadata_store.MetadataStore(config.metadata_connection()), config.pipeline_name)
    assert [r.run_id for r in runs] == [first_run[1].run_id, second_run[1].run_id,
                                        third_run[1].run_id, fourth_run[1].run_id]
    assert [r.blessed for r in runs] == [True, False, True, True]  # the third was blessed, then failed its check
    page = write_report(fourth_run[1], tmp_path, history=runs, thresholds=config.thresholds).read_text()
    assert "<h2>History (4 runs)</h2>" in page
    assert "<th>train rows</th><th>validation rows</th><th>eval rows</th>" in page
    rows = {s.name: s.rows for s in fourth_run[1].splits}
    table = page.split("<h2>History")[1].split("<h2>")[0]
    assert table.count(f"<td>{rows['eval']:,}</td>") == 4  # same data in every run
    assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"


def _inspect(config, *args):
    """inspect_metadata.py in a fresh process, as a user runs it; returns its JSON."""
    out = subprocess.run(
        [sys.executable, "inspect_metadata.py", *args, "--sqlite", str(config.metadata_path), "--json"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def test_inspect_runs_lists_every_run_with_every_component(first_run, second_run, third_run, fourth_run):
    runs = _inspect(first_run[0], "runs")
    assert [r["run_id"] for r in runs] == [
        first_run[1].run_id, second_run[1].run_id, third_run[1].run_id, fourth_run[1].run_id
    ]
    for run_record in runs[:2] + runs[3:]:
        assert {c["node"] for c in run_record["components"]} == NODES
        assert {c["state"] for c in run_record["components"]} == {"complete"}
        assert run_record["seconds"] >= max(c["seconds"] for c in run_record["components"])
    rejected = {c["node"]: c for c in runs[2]["components"]}
    assert rejected["ServingCheck"]["state"] == "FAILED"
    assert "did not finish within 0.5 s" in rejected["ServingCheck"]["failure_reason"]


def test_inspect_models_gives_blessing_metrics_and_push(first_run, second_run):
    config, first, _, _, _ = first_run
    models = _inspect(config, "models")
    assert [m["run_id"] for m in models[:2]] == [first.run_id, second_run[1].run_id]
    pushed, rejected = models[:2]
    assert pushed["blessed"] is True and rejected["blessed"] is False
    assert pushed["pushed_to"].rstrip("/") == first.pushed_to.rstrip("/")
    assert rejected["pushed_to"] is None
    for head in heads.NAMES:
        assert pushed["metrics"][head] == pytest.approx(first.metrics[head])


def test_inspect_lineage_goes_from_the_pushed_model_back_to_the_input_data(first_run, second_run):
    config, summary, _, _, _ = first_run
    steps = _inspect(config, "lineage", summary.pushed_to)
    by_type = {}
    for step in steps:
        by_type.setdefault(step["artifact_type"], []).append(step)
    assert steps[0]["artifact_type"] == "PushedModel"
    expected = {
        "ModelBlessing": "Evaluator", "ModelEvaluation": "Evaluator", "Model": "Trainer",
        "InfraBlessing": "ServingCheck",
        "TransformGraph": "Transform", "Schema": "ImportSchemaGen",
        "ExampleStatistics": "StatisticsGen", "ExampleAnomalies": "ExampleValidator",
    }
    for type_name, producer in expected.items():
        assert [s["produced_by"] for s in by_type[type_name]] == [producer], type_name
    (raw,) = [s for s in by_type["Examples"] if s["produced_by"] == "ExampleGen"]
    assert raw["properties"]["input_base"] == str(config.data_path.parent)
    assert raw["properties"]["span"] == 0
    # The same chain from the pushed model's artifact id; the rejected run's model pushed nothing.
    assert _inspect(config, "lineage", str(steps[0]["artifact_id"])) == steps
    missing = subprocess.run(
        [sys.executable, "inspect_metadata.py", "lineage", "/no/such/model", "--sqlite", str(config.metadata_path)],
        capture_output=True, text=True,
    )
    assert missing.returncode == 1 and "no pushed model or artifact at /no/such/model" in missing.stderr


def test_a_model_the_ranking_gate_refuses_is_never_published(fourth_run):
    """Run 5 (last: it reuses run 4's cached data and model) demands an NDCG no model reaches."""
    config = dataclasses.replace(
        fourth_run[0], ranking_threshold=RankingThreshold(ranking.NDCG, bound=1.0, max_regression=0.0),
        enable_cache=True,
    )
    served_before = served_versions(config.serving_dir)
    summary, error = run(config)
    assert error is None, error
    assert summary.blessed is False and summary.pushed_to is None
    assert any(f.startswith("ranking: ndcg_at_10") and "below the bound 1.0000" in f for f in summary.failed_thresholds)
    store = _store(config)
    (infra, *_) = sorted(store.get_artifacts_by_type("InfraBlessing"), key=lambda a: -a.id)
    reason = infra.custom_properties[mlmd_names.NOT_CHECKED_REASON].string_value
    assert reason.startswith("the ranking gate refused the model: ndcg_at_10")
    assert served_versions(config.serving_dir) == served_before
