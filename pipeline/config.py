"""The pipeline's one typed, frozen configuration object.

Runners build a `PipelineConfig` (from flags, a scheduler's settings, ...) and
pass it to `create_pipeline`; nothing here reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping
from pathlib import Path

from ml_metadata.proto import metadata_store_pb2

from components.choices import EVAL, TRAIN, VALIDATION, DriftComparator, SplitKind, parse
from components.ranking import DEFAULT_K, RankingThreshold
from recommender import features, heads
from recommender.config import ModelConfig
from recommender.heads import HeadThreshold

REPO_ROOT = Path(__file__).resolve().parent.parent

# Beam's in-process runner, one worker; named explicitly because Beam 2.77's
# "DirectRunner" first tries to download and run Prism (see pipeline/beam.py).
# Local workers run in this Python environment and nothing is staged for them.
# Without a dependency flag TFX would pack its own sources into an sdist in a
# new temporary folder for every Beam component, and never delete it; the
# project's setup.py is the dependency a remote runner would be given.
LOCAL_BEAM_RUNNER = "--runner=FnApiRunner"
LOCAL_DEPENDENCIES = f"--setup_file={REPO_ROOT / 'setup.py'}"
IN_MEMORY_BEAM_ARGS = (
    LOCAL_BEAM_RUNNER, "--direct_running_mode=in_memory", "--direct_num_workers=1", LOCAL_DEPENDENCIES
)
# The serving check of a blessed model fails if it has not finished by then.
SERVING_CHECK_TIMEOUT_S = 300.0

DEFAULT_SCHEMA = REPO_ROOT / "schemas" / "interactions.pbtxt"


@dataclasses.dataclass(frozen=True)
class MySQLMetadata:
    """A MySQL/MariaDB database holding ML Metadata, instead of the default SQLite file.

    The password is never a value in the config: it is read when a connection
    is made, from the environment variable named by `password_env` or the file
    at `password_file` (at most one; neither: no password).
    """

    host: str
    database: str
    port: int = 3306
    user: str = "root"
    password_env: str | None = None
    password_file: Path | None = None

    def __post_init__(self) -> None:
        if self.password_env and self.password_file:
            raise ValueError("metadata_mysql: give password_env or password_file, not both")
        if self.password_file is not None:
            object.__setattr__(self, "password_file", Path(self.password_file))

    def password(self) -> str:
        """The password, read now; ValueError naming the variable or file when it cannot be."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(f"metadata_mysql: environment variable {self.password_env} is not set")
            return value
        if self.password_file is not None:
            try:
                return self.password_file.read_text().rstrip("\r\n")
            except OSError as error:
                raise ValueError(f"metadata_mysql: password file {self.password_file}: {error.strerror}") from error
        return ""

    def connection_config(self) -> metadata_store_pb2.ConnectionConfig:
        config = metadata_store_pb2.ConnectionConfig()
        config.mysql.host, config.mysql.port = self.host, int(self.port)
        config.mysql.database, config.mysql.user = self.database, self.user
        config.mysql.password = self.password()
        return config


@dataclasses.dataclass(frozen=True)
class VocabularyCaps:
    """Caps on each ID vocabulary (user and item): at most the `top_k` most frequent IDs of the
    analysed rows (None: no cap), and only IDs seen at least `min_count` times. The IDs left out
    hash into the OOV buckets, as unseen IDs do; the run's summary reports how many were dropped.

    Why: a vocabulary is sorted by one worker and loaded by every process that
    loads the transform graph, so its size bounds their memory.
    """

    top_k: int | None = None
    min_count: int = 1

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"vocabulary.top_k must be >= 1 (or None: no cap), got {self.top_k}")
        if self.min_count < 1:
            raise ValueError(f"vocabulary.min_count must be >= 1, got {self.min_count}")


@dataclasses.dataclass(frozen=True)
class VertexTraining:
    """The Trainer as a Vertex AI custom training job (TFX's `google_cloud_ai_platform` Trainer):
    `workers` replicas of `machine_type`, each running `image`, in `region` of `project`.

    The first worker pool is one chief and the second holds the other
    workers; Vertex AI gives each replica its `TF_CONFIG`, from which the
    Trainer chooses `MultiWorkerMirroredStrategy`, and only the chief exports.
    """

    project: str
    region: str
    image: str
    workers: int = 1
    machine_type: str = "n1-standard-8"

    def __post_init__(self) -> None:
        missing = [name for name in ("project", "region", "image", "machine_type") if not getattr(self, name)]
        if missing:
            raise ValueError(f"vertex_training needs {missing}")
        if self.workers < 1:
            raise ValueError(f"vertex_training.workers must be >= 1, got {self.workers}")

    def worker_pool_specs(self) -> list[dict]:
        """The CustomJob's worker pool specs: the chief, then the other workers (if any)."""
        def pool(replicas: int) -> dict:
            return {"machine_spec": {"machine_type": self.machine_type}, "replica_count": replicas,
                    "container_spec": {"image_uri": self.image}}

        return [pool(1)] + ([pool(self.workers - 1)] if self.workers > 1 else [])


@dataclasses.dataclass(frozen=True)
class DriftThreshold:
    """How far one feature's distribution may move from the previous span.

    `comparator` is TFDV's (see DriftComparator).
    """

    comparator: DriftComparator
    threshold: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "comparator", parse(DriftComparator, self.comparator, "drift comparator"))
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"drift threshold must be in (0, 1], got {self.threshold}")


def default_drift() -> Mapping[str, DriftThreshold]:
    """The labels' distributions, which a broken upstream job shifts first."""
    return types.MappingProxyType({
        head: DriftThreshold(DriftComparator.JENSEN_SHANNON, 0.2) for head in heads.NAMES
    })


def default_thresholds(declared: tuple[heads.Head, ...] = heads.HEADS) -> Mapping[str, HeadThreshold]:
    """Each head's declared gate (recommender.heads)."""
    return types.MappingProxyType({head.name: head.threshold for head in declared})


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything one pipeline run needs.

    All outputs go under `output_dir`: the pipeline root, the SQLite ML Metadata
    store and the serving directory (see the properties).
    `data_path` is a CSV file or a folder whose `*.csv` files are all read.
    """

    data_path: Path
    output_dir: Path
    pipeline_name: str = "multitask-recommender"
    schema_path: Path = DEFAULT_SCHEMA
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    thresholds: Mapping[str, HeadThreshold] = dataclasses.field(default_factory=default_thresholds)
    num_oov_buckets: int = 10
    vocabulary: VocabularyCaps = VocabularyCaps()
    # Training counts at which a user/item slice becomes "some" and "many".
    tier_thresholds: tuple[int, int] = features.DEFAULT_TIER_THRESHOLDS
    # "temporal": the most recent `eval_fraction` of interactions (by timestamp)
    # is the eval split, the `validation_fraction` before it the validation
    # split. "hash": random splits of those sizes, as published benchmarks use.
    # The Trainer early-stops on the validation split; only the Evaluator reads
    # the eval split, so the blessing judges rows the training never chose by.
    split: SplitKind = SplitKind.TEMPORAL
    # ExampleGen writes each split in at least this many files: as many as
    # there are workers to read a split in parallel.
    example_files: int = 1
    eval_fraction: float = 0.2
    validation_fraction: float = 0.1
    # Spans: each run ingests the newest span; Transform and Trainer use the
    # last `window_spans` of them. Drift is checked against the previous span.
    window_spans: int = 1
    drift: Mapping[str, DriftThreshold] = dataclasses.field(default_factory=default_drift)
    # Ratings' maximum when the labels came from a rating scale (e.g. 5 stars):
    # the summary then also reports RMSE on that scale.
    rating_scale_max: float | None = None
    beam_pipeline_args: tuple[str, ...] = IN_MEMORY_BEAM_ARGS
    # ML Metadata in this MySQL/MariaDB database; None: SQLite at `metadata_path`.
    metadata_mysql: MySQLMetadata | None = None
    enable_cache: bool = False
    # The serving check of a blessed model fails if it has not finished by then.
    serving_check_timeout_s: float = SERVING_CHECK_TIMEOUT_S
    # Ranking quality (RankingEvaluator) is measured at this k; with a
    # threshold it also gates the publication, like the heads' thresholds.
    ranking_k: int = DEFAULT_K
    ranking_threshold: RankingThreshold | None = None
    # Below 1, only this fraction of the users is judged, chosen by a keyed hash
    # of the ID; the summary and the report say so.
    ranking_sample: float = 1.0
    # Training splits of at most this many MiB of gzipped examples are ranked in
    # the RankingEvaluator's own process; larger ones as a job on the Beam runner.
    ranking_in_process_mib: float = 64.0
    # After a publication, write top `batch_recommendations_k` items for every
    # user seen in training (or the users listed one per line in
    # `recommend_users`) under `recommendations_dir`; None: no batch job.
    batch_recommendations_k: int | None = None
    recommend_users: Path | None = None
    # Where the batch job writes instead of `recommendations_dir`: an object-store
    # URI (gs://bucket/recommendations) that remote Beam workers reach.
    recommendations_uri: str | None = None
    # The Trainer runs as a Vertex AI custom job on these workers; None: in the
    # orchestrator's own container or process.
    vertex_training: VertexTraining | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_path", Path(self.data_path).resolve())
        object.__setattr__(self, "output_dir", Path(self.output_dir).resolve())
        object.__setattr__(self, "schema_path", Path(self.schema_path).resolve())
        object.__setattr__(self, "thresholds", types.MappingProxyType(dict(self.thresholds)))
        object.__setattr__(self, "beam_pipeline_args", tuple(self.beam_pipeline_args))
        object.__setattr__(self, "drift", types.MappingProxyType(dict(self.drift)))
        if self.window_spans < 1:
            raise ValueError(f"window_spans must be >= 1, got {self.window_spans}")
        unknown = sorted(set(self.drift) - set(features.COLUMNS))
        if unknown:
            raise ValueError(f"drift names unknown column(s) {unknown}")
        heads.check_names(self.thresholds, "thresholds")
        if self.model.loss_weights is not None:
            heads.check_names(self.model.loss_weights, "model.loss_weights")
        object.__setattr__(self, "tier_thresholds", tuple(int(t) for t in self.tier_thresholds))
        if len(self.tier_thresholds) != 2 or not 1 < self.tier_thresholds[0] < self.tier_thresholds[1]:
            raise ValueError(f"tier_thresholds must be (some, many) with 1 < some < many, got {self.tier_thresholds}")
        if self.num_oov_buckets < 1:
            raise ValueError(f"num_oov_buckets must be >= 1, got {self.num_oov_buckets}")
        if self.example_files < 1:
            raise ValueError(f"example_files must be >= 1, got {self.example_files}")
        object.__setattr__(self, "split", parse(SplitKind, self.split, "split"))
        for name in ("eval_fraction", "validation_fraction"):
            if not 0.01 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0.01, 1), got {getattr(self, name)}")
        if self.eval_fraction + self.validation_fraction > 0.99:
            raise ValueError(
                f"eval_fraction + validation_fraction must leave at least 1% for training, "
                f"got {self.eval_fraction} + {self.validation_fraction}"
            )
        if not self.serving_check_timeout_s > 0:
            raise ValueError(f"serving_check_timeout_s must be > 0, got {self.serving_check_timeout_s}")
        if not 0.0 < self.ranking_sample <= 1.0:
            raise ValueError(f"ranking_sample must be in (0, 1], got {self.ranking_sample}")
        if self.ranking_in_process_mib < 0:
            raise ValueError(f"ranking_in_process_mib must be >= 0, got {self.ranking_in_process_mib}")
        for name in ("ranking_k", "batch_recommendations_k"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vertex_training is not None and self.vertex_training.workers > self.example_files:
            raise ValueError(
                f"vertex_training.workers ({self.vertex_training.workers}) needs example_files >= the workers, "
                f"got {self.example_files}: each worker reads its own files"
            )
        if self.recommendations_uri is not None and "://" not in self.recommendations_uri:
            raise ValueError(f"recommendations_uri must be a URI such as gs://bucket/folder, got "
                             f"{self.recommendations_uri!r}")
        if self.recommend_users is not None:
            object.__setattr__(self, "recommend_users", Path(self.recommend_users).resolve())
            if self.batch_recommendations_k is None:
                raise ValueError("recommend_users needs batch_recommendations_k")

    @property
    def split_buckets(self) -> dict[str, int]:
        """ExampleGen's splits, oldest first, each with its share of 100 buckets."""
        held_out = {
            VALIDATION: max(1, round(100 * self.validation_fraction)),
            EVAL: max(1, round(100 * self.eval_fraction)),
        }
        return {TRAIN: 100 - sum(held_out.values()), **held_out}

    @property
    def pipeline_root(self) -> Path:
        return self.output_dir / "pipeline"

    @property
    def metadata_path(self) -> Path:
        """The SQLite store (unused when `metadata_mysql` is set)."""
        return self.output_dir / "metadata.sqlite"

    def metadata_connection(self) -> metadata_store_pb2.ConnectionConfig:
        """The ML Metadata connection every runner and reader of this pipeline uses."""
        if self.metadata_mysql is not None:
            return self.metadata_mysql.connection_config()
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = str(self.metadata_path)
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        return config

    @property
    def serving_dir(self) -> Path:
        return self.output_dir / "serving"

    @property
    def recommendations_dir(self) -> Path:
        """Batch recommendations, one folder per published model version."""
        return self.output_dir / "recommendations"


def pipeline_config_from_dict(values: Mapping) -> PipelineConfig:
    """A PipelineConfig from plain JSON values (a scheduler's config file).

    Field names as in PipelineConfig; `model` holds ModelConfig fields,
    `thresholds` {head: HeadThreshold fields}, `drift` {column: DriftThreshold
    fields}, `ranking_threshold` RankingThreshold fields, `vocabulary`
    VocabularyCaps fields, `metadata_mysql` MySQLMetadata fields, `vertex_training`
    VertexTraining fields. Unknown names are errors.
    """
    values = dict(values)
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown PipelineConfig field(s) {unknown}")
    if "model" in values:
        values["model"] = ModelConfig.from_json_dict(values["model"])
    if "thresholds" in values:
        values["thresholds"] = {head: HeadThreshold(**t) for head, t in values["thresholds"].items()}
    if values.get("ranking_threshold") is not None:
        values["ranking_threshold"] = RankingThreshold(**values["ranking_threshold"])
    if "drift" in values:
        values["drift"] = {column: DriftThreshold(**d) for column, d in values["drift"].items()}
    if "vocabulary" in values:
        values["vocabulary"] = VocabularyCaps(**values["vocabulary"])
    if values.get("vertex_training") is not None:
        values["vertex_training"] = VertexTraining(**values["vertex_training"])
    if values.get("metadata_mysql") is not None:
        if "password" in values["metadata_mysql"]:
            raise ValueError(
                "metadata_mysql.password: a password is never read from a config file; "
                "name an environment variable (password_env) or a file (password_file) instead"
            )
        values["metadata_mysql"] = MySQLMetadata(**values["metadata_mysql"])
    for name in ("tier_thresholds", "beam_pipeline_args"):
        if name in values:
            values[name] = tuple(values[name])
    return PipelineConfig(**values)
