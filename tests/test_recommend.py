"""The `recommend` signatures: top k of the whole catalogue per user, ranked by the
retrieval task's score re-scored by the heads (or, without the task, by the
configured blend of popularity and the heads), training and history items left
out, new users served from their history, users with neither ranked by
popularity or the average user; they report what `serving_default` gives every
pair and pass the serving check, `saved_model_cli` and the warm-up replay."""

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components import serving_check
from data.synthetic import SyntheticSpec, generate_rows
from pipeline.config import SERVING_CHECK_TIMEOUT_S
from recommender import export, features, heads, recommend, warmup
from recommender.config import ModelConfig, RankingConfig, RetrievalConfig, preset
from recommender.model import TrainingData
from recommender.training import split_labels
from tests.support import transform_and_train

pytestmark = pytest.mark.slow
TOLERANCE = 1e-6
TRAIN_ROWS = 3_000
SPEC = SyntheticSpec(num_users=120, num_items=90, num_interactions=4_000, seed=3)


# The default blend: popularity x P(like) x expected purchase, ranked in log space.
BLEND = ModelConfig(epochs=2)


def _export(root, config, with_model=False):
    rows = generate_rows(SPEC)
    tft_output, model, columns = transform_and_train(root, rows, np.arange(TRAIN_ROWS), config, 5)
    training = TrainingData.from_batches(tf.data.Dataset.from_tensor_slices(columns).batch(256).map(split_labels))
    path = str(root / "model")
    export.export_model(model, tft_output, path, training, config)
    seen = {}
    for user, item in zip(rows[features.USER_ID][:TRAIN_ROWS], rows[features.ITEM_ID][:TRAIN_ROWS]):
        seen.setdefault(user.encode(), set()).add(item.encode())
    catalogue = tft_output.vocabulary_by_name(features.vocabulary_name(features.ITEM_ID))
    out = tf.saved_model.load(path), path, seen, list(catalogue)
    return (*out, model, tft_output) if with_model else out


def _log(values):
    return np.log(np.maximum(values, recommend.FLOOR))


def _popularity(items):
    """Each item's share of the training interactions."""
    counts = Counter(i.encode() for i in generate_rows(SPEC)[features.ITEM_ID][:TRAIN_ROWS])
    return np.array([counts[item] / TRAIN_ROWS for item in items])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("recommend"), BLEND)


@pytest.fixture(scope="module")
def retrieval(tmp_path_factory):
    """The retrieval preset's model, exported, with the model and transform output in process."""
    return _export(tmp_path_factory.mktemp("retrieval"), preset("retrieval", epochs=2), with_model=True)


def _recommend(loaded, users, k):
    out = loaded.signatures[features.RECOMMEND](user_id=tf.constant(users, tf.string), k=tf.constant(k, tf.int32))
    return {key: value.numpy() for key, value in out.items()}


def _serve(loaded, users, items):
    out = loaded.signatures[features.SERVING_DEFAULT](
        user_id=tf.constant(users, tf.string), item_id=tf.constant(items, tf.string)
    )
    return {key: value.numpy().ravel() for key, value in out.items()}


def _padded(histories):
    """Histories as `recommend_from_history` takes them: "" pads each to the longest."""
    longest = max(len(h) for h in histories)
    return [sorted(h) + [b""] * (longest - len(h)) for h in histories]


def test_each_user_gets_k_items_outside_the_history_best_first_with_the_pairs_serving_default_predicts(exported):
    loaded, _, seen, catalogue = exported
    users = sorted(seen)[:20]
    out = _from_history(loaded, users, _padded([seen[u] for u in users]), 10)
    assert set(out) == {features.ITEM_ID, features.SCORE, *heads.NAMES}
    for key, value in out.items():
        assert value.shape == (20, 10), key
    for row, user in enumerate(users):
        items = list(out[features.ITEM_ID][row])
        assert len(set(items)) == 10 and set(items) <= set(catalogue)
        assert not set(items) & seen[user]
        assert np.all(np.diff(out[features.SCORE][row]) <= 0)
        served = _serve(loaded, [user] * 10, items)
        for head in heads.NAMES:
            np.testing.assert_allclose(out[head][row], served[head], rtol=0, atol=TOLERANCE)
        # The score is the blend: popularity x P(like) x expected purchase, in log space.
        expected = _log(_popularity(items)) + _log(served[features.BINARY_RATING]) + _log(
            served[features.PURCHASE_PROBABILITY])
        np.testing.assert_allclose(out[features.SCORE][row], expected, rtol=1e-5, atol=1e-4)


def test_the_top_k_is_the_best_of_every_item_outside_the_history(exported):
    loaded, _, seen, catalogue = exported
    user = sorted(seen)[0]
    served = _serve(loaded, [user] * len(catalogue), catalogue)
    score = _log(_popularity(catalogue)) + _log(served[features.BINARY_RATING]) + _log(
        served[features.PURCHASE_PROBABILITY])
    order = sorted(range(len(catalogue)), key=lambda i: -score[i])
    unseen = [catalogue[i] for i in order if catalogue[i] not in seen[user]]
    assert list(_from_history(loaded, [user], _padded([seen[user]]), 5)[features.ITEM_ID][0]) == unseen[:5]
    # Without a history nothing is left out: the model holds no table of who saw what.
    assert list(_recommend(loaded, [user], 5)[features.ITEM_ID][0]) == [catalogue[i] for i in order[:5]]


def test_k_beyond_the_catalogue_returns_the_catalogue_padded_after_the_items_outside_the_history(exported):
    loaded, _, seen, catalogue = exported
    user = sorted(seen)[0]
    out = _from_history(loaded, [user, b"never-seen-user"], _padded([seen[user], []]), 10_000)
    assert out[features.ITEM_ID].shape == (2, len(catalogue))
    unseen = len(set(catalogue) - seen[user])
    assert np.all(out[features.ITEM_ID][0][:unseen] != b"") and np.all(out[features.ITEM_ID][0][unseen:] == b"")
    assert np.all(out[features.SCORE][0][unseen:] == 0)
    # An empty history has nothing to leave out: the whole catalogue.
    assert sorted(out[features.ITEM_ID][1]) == sorted(catalogue)
    assert sorted(_recommend(loaded, [user], 10_000)[features.ITEM_ID][0]) == sorted(catalogue)
    assert _recommend(loaded, [user], 0)[features.ITEM_ID].shape == (1, 0)
    assert _recommend(loaded, [], 10)[features.ITEM_ID].shape == (0, 10)


def test_unknown_users_are_ranked_as_the_average_user_and_get_the_models_predictions(exported):
    loaded, _, seen, catalogue = exported
    unknown = [b"never-seen-user", "ünïcode-👤".encode(), b""]
    out = _recommend(loaded, unknown, 10)
    # 120 users: fewer than the sample, so the average is over every training user.
    known = sorted(seen)
    assert len(known) < recommend.AVERAGE_USER_SAMPLE
    served = _serve(loaded, [u for u in known for _ in catalogue], catalogue * len(known))
    average = {
        head: dict(zip(catalogue, served[head].reshape(len(known), len(catalogue)).mean(axis=0)))
        for head in heads.NAMES
    }
    popularity = dict(zip(catalogue, _popularity(catalogue)))
    for row, user in enumerate(unknown):
        items = list(out[features.ITEM_ID][row])
        # Ranked by the average user's score...
        expected = [_log(popularity[i]) + _log(average[features.BINARY_RATING][i])
                    + _log(average[features.PURCHASE_PROBABILITY][i]) for i in items]
        np.testing.assert_allclose(out[features.SCORE][row], expected, rtol=1e-4, atol=1e-4)
        assert items == list(out[features.ITEM_ID][0])
        # ...while the predictions it reports are the model's for that pair, as serving_default gives them.
        answer = _serve(loaded, [user] * len(items), items)
        for head in heads.NAMES:
            np.testing.assert_allclose(out[head][row], answer[head], rtol=0, atol=TOLERANCE)
            assert np.abs(out[head][row] - [average[head][i] for i in items]).max() > 1e-4


def test_config_switches_change_the_blend_and_a_history_only_leaves_items_out(tmp_path):
    config = ModelConfig(
        epochs=1, retrieval=None, ranking=RankingConfig(
            popularity_weight=0.0, weights={features.BINARY_RATING: 1.0, features.PURCHASE_PROBABILITY: 0.0},
        ),
    )
    loaded, _, seen, catalogue = _export(tmp_path, config)
    user = max(seen, key=lambda u: len(seen[u]))
    out = _recommend(loaded, [user], len(catalogue))
    assert sorted(out[features.ITEM_ID][0]) == sorted(catalogue)
    np.testing.assert_allclose(out[features.SCORE], np.log(out[features.BINARY_RATING]), rtol=1e-6, atol=1e-6)
    # With no retrieval task a history does not describe the user: the other items keep their order and scores.
    left = _from_history(loaded, [user], _padded([seen[user]]), len(catalogue))
    kept = [i for i, item in enumerate(out[features.ITEM_ID][0]) if item not in seen[user]]
    assert list(left[features.ITEM_ID][0][: len(kept)]) == [out[features.ITEM_ID][0][i] for i in kept]
    np.testing.assert_allclose(left[features.SCORE][0][: len(kept)], out[features.SCORE][0][kept], rtol=1e-6)


def _from_history(loaded, users, history, k):
    out = loaded.signatures[features.RECOMMEND_FROM_HISTORY](
        user_id=tf.constant(users, tf.string), history=tf.constant(history, tf.string), k=tf.constant(k, tf.int32)
    )
    return {key: value.numpy() for key, value in out.items()}


def test_the_retrieval_score_ranks_known_users_from_their_history_rescored_by_the_heads(retrieval):
    loaded, _, seen, catalogue, model, tft_output = retrieval
    users = sorted(seen)[:5]
    histories = _padded([seen[u] for u in users])
    out = _from_history(loaded, users, histories, 10)
    vocabulary = list(tft_output.vocabulary_by_name(features.vocabulary_name(features.USER_ID)))
    item_index = {item: i for i, item in enumerate(catalogue)}
    for row, user in enumerate(users):
        items = list(out[features.ITEM_ID][row])
        assert len(set(items)) == 10 and not set(items) & seen[user]
        history = [item_index[i] for i in histories[row] if i][-RetrievalConfig().max_history:]
        query = model.query(tf.constant([vocabulary.index(user)], tf.int64), tf.constant([True]),
                            tf.ragged.constant([history], dtype=tf.int64))
        logits = model.retrieval_scores(query, tf.constant([item_index[i] for i in items], tf.int64)).numpy()[0]
        served = _serve(loaded, [user] * 10, items)
        expected = logits + _log(served[features.BINARY_RATING]) + _log(served[features.PURCHASE_PROBABILITY])
        np.testing.assert_allclose(out[features.SCORE][row], expected, rtol=1e-5, atol=1e-4)
        for head in heads.NAMES:
            np.testing.assert_allclose(out[head][row], served[head], rtol=0, atol=TOLERANCE)


def test_a_new_user_with_a_history_gets_a_personal_list_without_its_history_items(retrieval):
    loaded, _, seen, catalogue, *_ = retrieval
    nobody = _recommend(loaded, [b"new-user"], 10)[features.ITEM_ID][0]
    # Three items of one heavy user's history: the list follows them, and leaves them out.
    donor = max(seen, key=lambda u: len(seen[u]))
    history = sorted(seen[donor])[:3]
    out = _from_history(loaded, [b"new-user", b"new-user"], [history, [b""] * 3], 10)
    personal, empty = list(out[features.ITEM_ID][0]), list(out[features.ITEM_ID][1])
    assert not set(personal) & set(history) and len(set(personal)) == 10
    assert personal != list(nobody)
    # "" pads: an all-padding history is no history, the same list `recommend` gives.
    assert empty == list(nobody)
    # A known user's request history is what is left out, and nothing else.
    user = sorted(seen)[0]
    extra = [item for item in catalogue if item not in seen[user]][:2]
    listed = _from_history(loaded, [user], [extra], len(catalogue))[features.ITEM_ID][0]
    assert set(listed) - {b""} == set(catalogue) - set(extra)


def test_the_catalogue_is_scored_in_blocks_with_the_same_answer(retrieval, monkeypatch):
    loaded, _, seen, catalogue, model, tft_output = retrieval
    tables = model.recommend_tables  # set by the export
    users = tf.constant(np.arange(6), tf.int64)
    whole = recommend.recommend(model, tables, users, tf.constant(7))
    # A block of 4 items: the catalogue in many blocks, the best 7 kept across them.
    monkeypatch.setattr(recommend, "PAIRS_PER_CALL", 4 * 6)
    blocked = recommend.recommend(model, tables, users, tf.constant(7))
    np.testing.assert_array_equal(blocked[features.ITEM_ID].numpy(), whole[features.ITEM_ID].numpy())
    np.testing.assert_allclose(blocked[features.SCORE].numpy(), whole[features.SCORE].numpy(), rtol=1e-6)


def test_the_serving_check_and_saved_model_cli_run_recommend(exported):
    _, path, seen, _ = exported
    logs = warmup.read_requests(path)
    names = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert names[-2:] == [features.RECOMMEND, features.RECOMMEND_FROM_HISTORY]
    result = serving_check.check_in_fresh_process(path, SERVING_CHECK_TIMEOUT_S)
    assert {features.RECOMMEND, features.RECOMMEND_FROM_HISTORY} <= set(result["signatures"])
    cli = Path(sys.executable).parent / "saved_model_cli"
    user = sorted(seen)[0].decode()
    run = subprocess.run(
        [str(cli), "run", "--dir", path, "--tag_set", "serve", "--signature_def", features.RECOMMEND,
         "--input_exprs", f"user_id=['{user}'];k=3"],
        capture_output=True, text=True, check=True,
    )
    items = re.search(r"Result for output key item_id:\n\[\[([^\]]+)\]\]", run.stdout).group(1).split()
    assert len(items) == 3


def test_the_serving_check_refuses_recommendations_out_of_order(exported, tmp_path):
    _, _, _, path = exported
    answer = {
        features.ITEM_ID: np.array([[b"a", b"b"]]), features.SCORE: np.array([[0.1, 0.5]], np.float32),
        **{head: np.full((1, 2), 0.5, np.float32) for head in heads.NAMES},
    }
    inputs = {features.USER_ID: np.array([b"u"]), "k": np.int32(2)}
    with pytest.raises(serving_check.ServingCheckError, match="did not rank items by score"):
        serving_check._check_answers(path, [(features.RECOMMEND, inputs, answer)])
    answer[features.ITEM_ID] = np.array([[b"", b"b"]])
    answer[features.SCORE] = np.array([[0.5, 0.1]], np.float32)
    with pytest.raises(serving_check.ServingCheckError, match="an item after an empty one"):
        serving_check._check_answers(path, [(features.RECOMMEND, inputs, answer)])


def test_the_serving_check_refuses_recommend_scores_that_serving_default_does_not_give(exported):
    loaded, path, seen, _ = exported
    inputs = {features.USER_ID: np.array(sorted(seen)[:2]), "k": np.int32(3)}
    answer = _recommend(loaded, inputs[features.USER_ID], 3)
    serving_check._check_recommended_pairs(path, loaded, inputs, answer)
    # A skew far below any that changes a ranking, still far above float rounding.
    answer[heads.NAMES[0]] = answer[heads.NAMES[0]] + 1e-3
    with pytest.raises(serving_check.ServingCheckError, match=r"'recommend' and 'serving_default' differ by 0.00(1|09999)"):
        serving_check._check_recommended_pairs(path, loaded, inputs, answer)


def _training_file(path):
    """The export's training rows as ExampleGen writes them: gzipped TFRecords of tf.Examples."""
    rows = generate_rows(SPEC)
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for i in range(TRAIN_ROWS):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                features.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[rows[features.USER_ID][i].encode()])),
                features.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[rows[features.ITEM_ID][i].encode()])),
                features.TIMESTAMP: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(rows[features.TIMESTAMP][i])])),
            })).SerializeToString())
    return str(path)


def test_the_batch_job_writes_each_listed_users_top_k_without_its_training_items_and_never_replaces_a_table(
    exported, tmp_path,
):
    import apache_beam as beam
    import pyarrow.parquet as pq

    from components import batch_recommend
    from pipeline.config import IN_MEMORY_BEAM_ARGS

    loaded, path, seen, _ = exported
    listed = tmp_path / "users.txt"
    heavy = max(seen, key=lambda u: len(seen[u]))
    listed.write_bytes(b"\n".join([heavy, b"never-seen-user", b"", heavy]) + b"\n")
    users = [heavy, b"never-seen-user", heavy]
    assert batch_recommend.check_users(str(listed)) == 3
    training = _training_file(tmp_path / "train.gz")
    with beam.Pipeline(argv=list(IN_MEMORY_BEAM_ARGS)) as pipeline:
        batch_recommend.write_recommendations(pipeline, path, str(listed), [training], 3, str(tmp_path / "staging"))
    assert batch_recommend.publish_table(tmp_path / "staging", tmp_path / "7") == 9
    table = pq.read_table(tmp_path / "7").to_pandas()
    answer = _from_history(loaded, users[:2], _padded([seen[heavy], []]), 3)
    for row, user in enumerate(users[:2]):
        mine = table[table["user_id"] == user.decode()].sort_values(["rank", "item_id"])
        assert sorted(mine["rank"]) == ([1, 1, 2, 2, 3, 3] if user == heavy else [1, 2, 3])  # heavy: asked twice
        assert set(mine["item_id"]) == {i.decode() for i in answer[features.ITEM_ID][row]}
        assert not {i.encode() for i in mine["item_id"]} & seen.get(user, set())
        by_item = dict(zip(answer[features.ITEM_ID][row], answer[features.BINARY_RATING][row]))
        for item, value in zip(mine["item_id"], mine[features.BINARY_RATING]):
            assert value == pytest.approx(by_item[item.encode()], abs=TOLERANCE)
    (tmp_path / "again").mkdir()
    with pytest.raises(FileExistsError, match="already exist"):
        batch_recommend.publish_table(tmp_path / "again", tmp_path / "7")
    listed.write_bytes(b"u1\n u2\n")
    with pytest.raises(ValueError, match=r"users.txt, line 2: user ID b' u2' has surrounding whitespace"):
        batch_recommend.check_users(str(listed))


def test_on_object_storage_the_table_moves_with_beams_file_systems_and_its_marker_comes_last(exported, tmp_path):
    """What BatchRecommender does for an output URI (gs://, s3://), through the same FileSystems
    calls, on this machine's file system: the files move to the version's folder, `_SUCCESS`
    (rows and files) is written after them, the staging is gone, and a version is never replaced."""
    import json

    import apache_beam as beam
    import pyarrow.parquet as pq

    from components import batch_recommend
    from pipeline.config import IN_MEMORY_BEAM_ARGS

    _, path, seen, _ = exported
    assert batch_recommend.object_store("gs://bucket/recommendations")
    assert not batch_recommend.object_store(str(tmp_path))
    listed = tmp_path / "users.txt"
    listed.write_bytes(b"\n".join(sorted(seen)[:4]) + b"\n")
    staging = str(tmp_path / "store" / ".staging-7-abc")
    with beam.Pipeline(argv=list(IN_MEMORY_BEAM_ARGS)) as pipeline:
        batch_recommend.write_recommendations(pipeline, path, str(listed), [_training_file(tmp_path / "train.gz")], 3,
                                              staging)
    destination = tmp_path / "store" / "7"
    assert batch_recommend.publish_to_object_store(staging, str(destination)) == 12
    marker = destination / batch_recommend.SUCCESS_MARKER
    assert json.loads(marker.read_text()) == {"rows": 12, "files": len(list(destination.glob("*.parquet")))}
    assert all(table.stat().st_mtime_ns <= marker.stat().st_mtime_ns for table in destination.glob("*.parquet"))
    assert len(pq.read_table(destination, schema=batch_recommend.SCHEMA)) == 12
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["7"]
    before = {p.name: p.read_bytes() for p in destination.iterdir()}
    with pytest.raises(FileExistsError, match="already exist"):
        batch_recommend.publish_to_object_store(str(tmp_path / "other"), str(destination))
    assert {p.name: p.read_bytes() for p in destination.iterdir()} == before


def test_a_users_file_from_a_spreadsheet_or_gzipped_reads_as_its_ids_and_binary_junk_is_refused(tmp_path):
    import gzip

    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from components import batch_recommend

    exported_by_excel = tmp_path / "users.csv"
    exported_by_excel.write_bytes(b"\xef\xbb\xbfu1\r\nu\xc3\xa9\r\n\r\n")
    packed = tmp_path / "users.txt.gz"
    packed.write_bytes(gzip.compress(b"u1\nu2\n"))
    assert batch_recommend.check_users(str(exported_by_excel)) == 2
    assert batch_recommend.check_users(str(packed)) == 2
    for path, expected in ((exported_by_excel, [b"u1", "ué".encode()]), (packed, [b"u1", b"u2"])):
        with beam.Pipeline() as pipeline:
            assert_that(pipeline | batch_recommend.read_user_ids(str(path)), equal_to(expected))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"u1\nu\xe9\n")
    with pytest.raises(ValueError, match=r"latin1.txt, line 2: user ID b'u\\xe9' is not UTF-8 text"):
        batch_recommend.check_users(str(latin1))
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(gzip.compress(b"u1\n" * 1000)[:30])
    with pytest.raises(ValueError, match=r"cut.txt.gz: cannot be read"):
        batch_recommend.check_users(str(truncated))


def test_a_users_history_is_its_distinct_training_items_oldest_first():
    from components import batch_recommend

    events = [(30, b"c"), (10, b"b"), (20, b"a"), (40, b"b"), (10, b"a")]
    assert batch_recommend.history(events) == [b"a", b"b", b"c"]
    assert batch_recommend.history([]) == []


def test_ranking_score_is_the_weighted_sum_of_the_retrieval_logit_log_popularity_and_log_predictions():
    liked = np.array([[0.2, 0.9, 0.5], [0.7, 0.1, 0.4]], np.float32)
    purchase = np.array([[0.5, -0.3, 1.2], [0.0, 0.8, 0.6]], np.float32)
    logits = np.array([[1.5, -2.0, 0.3], [0.0, 4.0, -1.0]], np.float32)
    popularity = np.array([0.5, 0.3, 0.2], np.float32)
    predictions = {features.BINARY_RATING: tf.constant(liked), features.PURCHASE_PROBABILITY: tf.constant(purchase)}
    cases = [
        ({features.BINARY_RATING: 1.0, features.PURCHASE_PROBABILITY: 1.0}, 1.0, 1.0),
        ({features.BINARY_RATING: 0.5, features.PURCHASE_PROBABILITY: 2.0}, 2.0, 0.0),
        ({features.BINARY_RATING: 1.0, features.PURCHASE_PROBABILITY: 0.0}, 0.0, 0.5),
        ({features.BINARY_RATING: 0.0, features.PURCHASE_PROBABILITY: 0.0}, 0.0, 0.0),
    ]
    for weights, popularity_weight, retrieval_weight in cases:
        score = recommend.ranking_score(
            predictions, weights, tf.constant(logits), retrieval_weight, tf.constant(popularity), popularity_weight
        ).numpy()
        expected = (
            retrieval_weight * logits + popularity_weight * np.log(popularity)[None, :]
            + weights[features.BINARY_RATING] * np.log(np.maximum(liked, recommend.FLOOR))
            + weights[features.PURCHASE_PROBABILITY] * np.log(np.maximum(purchase, recommend.FLOOR))
        )
        assert score.shape == liked.shape
        np.testing.assert_allclose(score, expected, rtol=1e-5)


def test_of_a_long_request_history_the_last_max_history_items_count_and_all_are_left_out(retrieval, monkeypatch):
    loaded, _, seen, catalogue, model, _ = retrieval
    tables = model.recommend_tables  # set by the export
    monkeypatch.setattr(tables, "max_history", 2)
    users = tf.constant([int(tables.num_users.numpy())], tf.int64)  # the first OOV bucket: a new user
    everything = tf.constant(len(catalogue), tf.int32)
    long = recommend.recommend(model, tables, users, everything, tf.ragged.constant([[0, 1, 2, 3]], tf.int64))
    recent = recommend.recommend(model, tables, users, everything, tf.ragged.constant([[2, 3]], tf.int64))
    early = {catalogue[0], catalogue[1]}
    listed = [i for i in long[features.ITEM_ID].numpy()[0] if i]
    assert not early & set(listed)
    assert listed == [i for i in recent[features.ITEM_ID].numpy()[0] if i and i not in early]


def test_the_ranking_evaluator_gives_each_user_its_history_which_the_default_model_only_leaves_out(
    exported, monkeypatch,
):
    from components import ranking_job

    loaded, _, seen, catalogue = exported
    history = catalogue[:3]
    (top,) = ranking_job.model_top(loaded.signatures, [b"new-user"], {b"new-user": set(history)}, 5,
                                         {b"new-user": history})
    unknown = [i for i in _recommend(loaded, [b"new-user"], 8)[features.ITEM_ID][0] if i not in history]
    assert top == unknown[:5]
    # Known users with their training items: the same lists when a call's padded histories must be
    # cut into several calls (here one user per call).
    users = sorted(seen)[:6]
    histories = {u: sorted(seen[u]) for u in users}
    whole = ranking_job.model_top(loaded.signatures, users, seen, 5, histories)
    monkeypatch.setattr(recommend, "PAIRS_PER_CALL", max(map(len, histories.values())))
    assert ranking_job.model_top(loaded.signatures, users, seen, 5, histories) == whole
    for user, items in zip(users, whole):
        assert len(items) == 5 and not set(items) & seen[user]


def test_training_pairs_of_ids_outside_the_vocabularies_are_in_no_history():
    # 3 known users and 4 known items; indices 3.. and 4.. are OOV buckets (IDs a cap left out).
    users = np.array([0, 0, 1, 3, 2, 2, 0])
    items = np.array([2, 1, 1, 0, 5, 3, 2])
    splits, values = recommend.user_histories(users, items, num_users=3, num_items=4)
    assert splits.tolist() == [0, 2, 3, 4] and values.tolist() == [1, 2, 1, 3]
    splits, values = recommend.user_histories(users, items, num_users=3, num_items=4, limit=1)
    assert splits.tolist() == [0, 1, 2, 3] and values.tolist() == [1, 1, 3]


def test_with_times_a_limited_history_keeps_each_users_latest_items_by_first_time():
    # User 0 had items 3, 1, 2 first at times 10, 20, 30 (item 3 again at 99); user 1 items 0, 2.
    users = np.array([0, 0, 0, 0, 1, 1])
    items = np.array([3, 1, 2, 3, 2, 0])
    times = np.array([10, 20, 30, 99, 5, 6])
    splits, values = recommend.user_histories(users, items, num_users=2, num_items=4, limit=2, times=times)
    assert splits.tolist() == [0, 2, 4] and values.tolist() == [1, 2, 0, 2]  # item index order within a user
    splits, values = recommend.user_histories(users, items, num_users=2, num_items=4, times=times)
    assert splits.tolist() == [0, 3, 5] and values.tolist() == [1, 2, 3, 0, 2]
