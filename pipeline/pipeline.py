"""`create_pipeline`: the DAG, built from a PipelineConfig. Imports no orchestrator.

ExampleGen (newest span) -> StatisticsGen -> ExampleValidator (against
ImportSchemaGen's curated schema) -> DataValidationGate (also drift against the
previous span) -> Transform (over the last `window_spans` spans, reusing its
analyzer cache) -> Trainer -> Evaluator (on the newest span, against the model
being served; TFMA's metrics computed a batch at a time) and RankingEvaluator (top-k quality against popularity and that
model, optionally gated) -> ServingCheck (the blessed model, loaded as TF
Serving loads it in a fresh process, answers its warm-up requests; otherwise
the run fails) -> Pusher (stages the checked bytes where TF Serving does not
look, then renames them to a new version: a server only ever sees checked
models) -> optionally BatchRecommender (top k for every user, from the
published model, as Parquet).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
from pathlib import Path

from ml_metadata.proto import metadata_store_pb2
from tfx.components import ExampleValidator, Pusher, StatisticsGen, Trainer, Transform, Tuner
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2, pusher_pb2, trainer_pb2, transform_pb2
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

from components import choices, custom_config, example_gen, pusher
from components.batch_recommend import BatchRecommender
from components.batched_evaluation import Evaluator
from components.data_validation import DataValidationGate
from components.ranking_evaluator import RankingEvaluator
from components.resolvers import (
    LatestServedModelStrategy,
    LatestSpansStrategy,
    NewestArtifactStrategy,
    PreviousSpanStrategy,
)
from components.serving_check_component import ServingCheck
from pipeline.config import REPO_ROOT, PipelineConfig, VertexTraining
from pipeline.eval_config import make_eval_config

# Dotted paths of the functions Transform, Tuner and Trainer run (installed
# packages, so Beam workers import them like any dependency).
PREPROCESSING_FN = "components.preprocessing.preprocessing_fn"
TUNER_FN = "components.trainer.tuner_fn"
RUN_FN = "components.trainer.run_fn"

# The packages whose code the components run.
CODE_PACKAGES = ("components", "recommender")


def code_fingerprint(root: Path = REPO_ROOT) -> str:
    """SHA-256 over the Python sources of CODE_PACKAGES, in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(p for package in CODE_PACKAGES for p in (root / package).rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# Transform's node id; its analyzer-cache resolver looks up its earlier outputs by it.
TRANSFORM_ID = "Transform"

# The Evaluator's baseline resolver (the newest published model).
SERVED_MODEL_RESOLVER_ID = "latest_served_model_resolver"

# Sub-folders named like this hold one span each: span-1/, span-2/, ...
SPAN_FOLDERS = "span-{SPAN}"


_GLOB_CHARACTERS = frozenset("*?[")


def _literal(path: Path) -> tuple[Path, str]:
    """(the longest ancestor of `path` free of glob characters, the rest as an escaped glob).

    TFX and Beam treat the input as a glob: a folder named `runs[1]` must be read
    as itself, not as `runs1`.
    """
    base = path
    while _GLOB_CHARACTERS & set(str(base)):
        base = base.parent
    return base, glob.escape(path.relative_to(base).as_posix()) if base != path else ""


def _input_split(data_path: Path) -> tuple[str, str]:
    """(input_base, file pattern) for a CSV file, a folder of CSV files, or a folder of spans.

    A folder holds `*.csv` files or, if it has none, `*.csv.gz` files.
    """
    if data_path.is_dir():
        base, prefix = _literal(data_path)
        prefix = f"{prefix}/" if prefix else ""
        if any(p.is_dir() for p in data_path.glob("span-*")):
            if prefix:
                raise ValueError(
                    f"{data_path}: a folder of spans cannot have *, ? or [ in its path; rename it"
                )
            return str(base), f"{SPAN_FOLDERS}/*.csv"
        kind = "*.csv" if any(data_path.glob("*.csv")) or not any(data_path.glob("*.csv.gz")) else "*.csv.gz"
        return str(base), prefix + kind
    base, name = _literal(data_path.parent)
    name = f"{name}/" if name else ""
    return str(base), name + glob.escape(data_path.name)


@dataclasses.dataclass(frozen=True)
class DataComponents:
    """The data half of the DAG: ingestion and validation, up to the gate."""

    example_gen: FileBasedExampleGen
    statistics_gen: StatisticsGen
    schema_gen: ImportSchemaGen
    example_validator: ExampleValidator
    previous_statistics: Resolver | None  # None without span resolvers
    gate: DataValidationGate

    def all(self) -> list:
        nodes = [self.example_gen, self.statistics_gen, self.schema_gen, self.example_validator]
        if self.previous_statistics is not None:
            nodes.append(self.previous_statistics)
        return nodes + [self.gate]


def data_components(config: PipelineConfig, span_resolvers: bool = True) -> DataComponents:
    """ExampleGen (newest span), statistics, the curated schema, validation and the gate."""
    input_base, pattern = _input_split(config.data_path)

    example_gen_ = FileBasedExampleGen(
        input_base=input_base,
        input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="all", pattern=pattern)]),
        output_config=example_gen.output_config(config.split_buckets),
        custom_executor_spec=executor_spec.BeamExecutorSpec(
            example_gen.SchemaCsvExampleGenExecutor
        ),
        custom_config={
            example_gen.SCHEMA_PATH: str(config.schema_path),
            example_gen.SPLIT: config.split,
            example_gen.SEED: config.model.seed,
            example_gen.MIN_FILES: config.example_files,
        },
    ).with_id("ExampleGen")

    statistics_gen = StatisticsGen(examples=example_gen_.outputs["examples"])
    schema_gen = ImportSchemaGen(schema_file=str(config.schema_path))
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    # Resolvers over plain channels see the artifacts of every run (an output
    # channel would limit them to this run); the explicit dependency makes them
    # wait for this run's artifact.
    previous_statistics = None
    if span_resolvers:
        previous_statistics = Resolver(
            strategy_class=PreviousSpanStrategy,
            statistics=Channel(
                type=standard_artifacts.ExampleStatistics,
                producer_component_id=statistics_gen.id,
            ),
        ).with_id("previous_span_statistics_resolver")
        previous_statistics.add_upstream_node(statistics_gen)
    gate = DataValidationGate(
        anomalies=example_validator.outputs["anomalies"],
        statistics=statistics_gen.outputs["statistics"],
        examples=example_gen_.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        previous_statistics=previous_statistics.outputs["statistics"] if previous_statistics else None,
        data_source=str(config.data_path),
        drift_thresholds={name: [d.comparator.value, d.threshold] for name, d in sorted(config.drift.items())},
    )

    return DataComponents(
        example_gen_, statistics_gen, schema_gen, example_validator, previous_statistics, gate
    )


def _pipeline(
    config: PipelineConfig,
    components: list,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None,
) -> Pipeline:
    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=str(config.pipeline_root),
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )


def vertex_training_config(vertex: VertexTraining) -> dict:
    """The Trainer's `custom_config` keys that make TFX's Vertex AI Trainer submit `vertex`'s job."""
    # Imported only for a Vertex AI job: the extension imports the Vertex AI client (seconds).
    from tfx.extensions.google_cloud_ai_platform.constants import ENABLE_VERTEX_KEY, VERTEX_REGION_KEY
    from tfx.extensions.google_cloud_ai_platform.trainer.executor import TRAINING_ARGS_KEY

    return {
        ENABLE_VERTEX_KEY: True,
        VERTEX_REGION_KEY: vertex.region,
        TRAINING_ARGS_KEY: {"project": vertex.project, "job_spec": {"worker_pool_specs": vertex.worker_pool_specs()}},
    }


def create_data_validation_pipeline(
    config: PipelineConfig,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
) -> Pipeline:
    """Only ingestion and validation: checks new data without training on it."""
    return _pipeline(config, data_components(config).all(), metadata_connection_config)


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    span_resolvers: bool = True,
) -> Pipeline:
    """The full pipeline for `config`; the runner supplies the metadata connection.

    `span_resolvers=False` is for orchestrators that run only TFX's built-in
    resolver strategies (Kubeflow Pipelines v2 / Vertex AI): Transform then
    reads this run's span only (`window_spans` must be 1), without the analyzer
    cache, the gate checks anomalies but not drift from the previous span, and
    the Evaluator's baseline is TFX's latest blessed model instead of the latest
    published one.
    """
    if not span_resolvers and config.window_spans != 1:
        raise ValueError("without span resolvers the window is this run's span: window_spans must be 1")
    fingerprint = code_fingerprint()
    data = data_components(config, span_resolvers)
    example_gen_, schema_gen, gate = data.example_gen, data.schema_gen, data.gate

    nodes, examples, cache = [], example_gen_.outputs["examples"], None
    # The splits the shipped model learns from: a refit (ModelConfig.refit)
    # fits the validation rows too, so they count as training rows for
    # Transform's analyzers and the ranking's left-out items as well.
    training_splits = [choices.TRAIN, choices.VALIDATION] if config.model.refit else [choices.TRAIN]
    if span_resolvers:
        span_window = Resolver(
            strategy_class=LatestSpansStrategy,
            config={"num_spans": config.window_spans},
            examples=Channel(
                type=standard_artifacts.Examples, producer_component_id=example_gen_.id
            ),
        ).with_id("span_window_resolver")
        span_window.add_upstream_node(example_gen_)
        # The analyzer cache of the last Transform run: analyzers of spans it has
        # already seen are not recomputed.
        analyzer_cache = Resolver(
            strategy_class=NewestArtifactStrategy,
            cache=Channel(
                type=standard_artifacts.TransformCache, producer_component_id=TRANSFORM_ID
            ),
        ).with_id("analyzer_cache_resolver")
        nodes = [span_window, analyzer_cache]
        examples, cache = span_window.outputs["examples"], analyzer_cache.outputs["cache"]

    transform = Transform(
        examples=examples,
        schema=schema_gen.outputs["schema"],
        analyzer_cache=cache,
        preprocessing_fn=PREPROCESSING_FN,
        # Transform's own TFDV statistics would repeat StatisticsGen's on the raw
        # data and describe transformed features nothing reads; at 10M rows they
        # cost time and memory (string counts for every ID) in the largest component.
        disable_statistics=True,
        # Analyzers (vocabularies, tiers) see training rows only. No split is
        # written transformed: the Trainer reads raw rows through the
        # transform graph (in memory, in large batches), as the Evaluator and
        # serving do through the exported model; a transformed copy cost a
        # pass that encoded and wrote every training and validation row.
        splits_config=transform_pb2.SplitsConfig(analyze=training_splits),
        materialize=False,
        custom_config={
            custom_config.NUM_OOV_BUCKETS: config.num_oov_buckets,
            custom_config.VOCABULARY_TOP_K: config.vocabulary.top_k,
            custom_config.VOCABULARY_MIN_COUNT: config.vocabulary.min_count,
            custom_config.TIER_THRESHOLDS: list(config.tier_thresholds),
            custom_config.CODE_FINGERPRINT: fingerprint,
        },
    ).with_id(TRANSFORM_ID)
    # Bad data must stop the run before Transform: the gate has no outputs to
    # consume, so the dependency is explicit.
    transform.add_upstream_node(gate)

    model_custom_config = {
        custom_config.MODEL: config.model.to_json_dict(),
        custom_config.NUM_OOV_BUCKETS: config.num_oov_buckets,
        custom_config.CODE_FINGERPRINT: fingerprint,
    }
    tuner = None
    if config.model.tuning is not None:
        # Trials fit the train split and are judged on the validation split only,
        # as the Trainer's first fit is; the Trainer then fits the best values.
        tuner = Tuner(
            tuner_fn=TUNER_FN,
            examples=examples,
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=trainer_pb2.TrainArgs(splits=[choices.TRAIN]),
            eval_args=trainer_pb2.EvalArgs(splits=[choices.VALIDATION]),
            custom_config=model_custom_config,
        )
    trainer_class = Trainer
    if config.vertex_training is not None:
        from tfx.extensions.google_cloud_ai_platform.trainer import component as vertex

        trainer_class = vertex.Trainer
        model_custom_config = {**model_custom_config, **vertex_training_config(config.vertex_training)}
    trainer_ = trainer_class(
        run_fn=RUN_FN,
        examples=examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner is not None else None,
        train_args=trainer_pb2.TrainArgs(splits=training_splits),
        eval_args=trainer_pb2.EvalArgs(splits=[choices.VALIDATION]),
        custom_config=model_custom_config,
    )

    if span_resolvers:
        resolver = Resolver(
            strategy_class=LatestServedModelStrategy,
            model=Channel(type=standard_artifacts.Model),
        ).with_id(SERVED_MODEL_RESOLVER_ID)
    else:
        resolver = Resolver(
            strategy_class=LatestBlessedModelStrategy,
            model=Channel(type=standard_artifacts.Model),
            model_blessing=Channel(type=standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")

    evaluator = Evaluator(
        examples=example_gen_.outputs["examples"],
        model=trainer_.outputs["model"],
        baseline_model=resolver.outputs["model"],
        eval_config=make_eval_config(config.thresholds),
        example_splits=[choices.EVAL],
    )

    ranking_evaluator = RankingEvaluator(
        examples=example_gen_.outputs["examples"],
        model=trainer_.outputs["model"],
        baseline_model=resolver.outputs["model"],
        k=config.ranking_k,
        tier_thresholds=list(config.tier_thresholds),
        training_splits=training_splits,
        threshold=dataclasses.asdict(config.ranking_threshold) if config.ranking_threshold else {},
        sample=config.ranking_sample,
        in_process_mib=config.ranking_in_process_mib,
    )

    serving_check = ServingCheck(
        model=trainer_.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        ranking=ranking_evaluator.outputs["evaluation"],
        timeout_seconds=float(config.serving_check_timeout_s),
    )

    pusher_ = Pusher(
        model=trainer_.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=serving_check.outputs["blessing"],
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(
                base_directory=str(config.serving_dir)
            )
        ),
        custom_executor_spec=executor_spec.ExecutorClassSpec(pusher.Executor),
    )

    components = [
        *data.all(), *nodes, transform, *([tuner] if tuner else []), trainer_, resolver, evaluator,
        ranking_evaluator, serving_check, pusher_,
    ]
    if config.batch_recommendations_k is not None:
        components.append(BatchRecommender(
            pushed_model=pusher_.outputs["pushed_model"],
            transform_graph=transform.outputs["transform_graph"],
            examples=example_gen_.outputs["examples"],
            k=config.batch_recommendations_k,
            output_dir=config.recommendations_uri or str(config.recommendations_dir),
            training_splits=training_splits,
            users_file=str(config.recommend_users or ""),
        ))
    return _pipeline(config, components, metadata_connection_config)
