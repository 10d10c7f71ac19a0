"""Compile the pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines.

    python run_kubeflow.py --image REGISTRY/recommender:TAG \
        --data /gcs/BUCKET/interactions --output /gcs/BUCKET/recommender \
        [--model-config configs/original-model.json] [--beam-runner dataflow ...] \
        [--vertex-training-project P --vertex-training-region R [--training-workers N]]

Writes a pipeline definition (JSON, KFP IR) built from the same
`create_pipeline(config)` as every other runner; every component runs in
`--image` (see the Dockerfile). Paths are seen from inside the containers: on
Vertex AI, Cloud Storage is mounted at /gcs/<bucket>/. With
`--vertex-training-project`, the Trainer submits itself as a Vertex AI custom
training job of `--training-workers` replicas of the same image (TFX's
`google_cloud_ai_platform` Trainer). Submit the file with the KFP SDK or
`gcloud`; see the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner import KubeflowV2DagRunner, KubeflowV2DagRunnerConfig

from pipeline.beam import add_beam_flags, beam_args_from_flags
from pipeline.config import REPO_ROOT, PipelineConfig, VertexTraining
from pipeline.pipeline import create_pipeline
from pipeline.runner_options import model_config

DEFAULT_FILE = Path("outputs") / "kubeflow" / "recommender_pipeline.json"
# Where the Dockerfile puts the project in the image (its WORKDIR).
IMAGE_ROOT = Path("/pipeline")


def in_image(path: Path, image_root: Path) -> Path:
    """`path` as the image sees it: a file of this checkout moves under `image_root`; others stay."""
    return image_root / path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def compile_pipeline(config: PipelineConfig, image: str, output_file: Path, image_root: Path = IMAGE_ROOT) -> Path:
    """Writes the KFP v2 pipeline definition for `config`, each component in `image`.

    The project's own files (the curated schema, `setup.py` in remote Beam
    arguments) are named by their place in the image, under `image_root`, so
    the definition holds no path of the machine that compiled it.
    """
    config = dataclasses.replace(
        config,
        schema_path=in_image(config.schema_path, image_root),
        beam_pipeline_args=tuple(
            f"--setup_file={in_image(Path(arg.split('=', 1)[1]), image_root)}" if arg.startswith("--setup_file=")
            else arg
            for arg in config.beam_pipeline_args
        ),
    )
    output_file.parent.mkdir(parents=True, exist_ok=True)
    runner = KubeflowV2DagRunner(
        config=KubeflowV2DagRunnerConfig(
            display_name=config.pipeline_name, default_image=image
        ),
        output_dir=str(output_file.parent),
        output_filename=output_file.name,
    )
    # Vertex AI keeps ML Metadata itself (no connection config) and runs only
    # TFX's built-in resolver strategies.
    runner.run(create_pipeline(config, metadata_connection_config=None, span_resolvers=False))
    return output_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True, help="container image with this project installed")
    parser.add_argument("--data", type=Path, required=True, help="interactions, as the containers see them")
    parser.add_argument("--output", type=Path, required=True, help="output root, as the containers see it")
    parser.add_argument("--model-config", default=None, help="ModelConfig fields: JSON or a JSON file")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="where to write the definition")
    parser.add_argument("--image-root", type=Path, default=IMAGE_ROOT,
                        help="where the image holds this project (the Dockerfile's WORKDIR)")
    parser.add_argument("--vertex-training-project", default=None,
                        help="run the Trainer as a Vertex AI custom job in this GCP project")
    parser.add_argument("--vertex-training-region", default=None, help="the Vertex AI region of that job")
    parser.add_argument("--training-workers", type=int, default=1,
                        help="Vertex AI training replicas (the first is the chief); ExampleGen then writes "
                        "as many files per split")
    parser.add_argument("--training-machine-type", default=VertexTraining.machine_type,
                        help="the machine type of every training replica")
    add_beam_flags(parser)
    args = parser.parse_args(argv)
    try:
        vertex = None
        if args.vertex_training_project or args.vertex_training_region:
            vertex = VertexTraining(
                project=args.vertex_training_project, region=args.vertex_training_region, image=args.image,
                workers=args.training_workers, machine_type=args.training_machine_type,
            )
        elif args.training_workers != 1:
            raise ValueError("--training-workers needs --vertex-training-project and --vertex-training-region")
        config = PipelineConfig(
            data_path=args.data,
            output_dir=args.output,
            model=model_config(args.model_config),
            beam_pipeline_args=beam_args_from_flags(args),
            example_files=vertex.workers if vertex else 1,
            vertex_training=vertex,
        )
    except ValueError as error:  # OptionError included
        print(f"Invalid option: {error}", file=sys.stderr)
        return 2
    print(compile_pipeline(config, args.image, args.file, args.image_root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
