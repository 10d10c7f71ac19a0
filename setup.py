"""Packages the pipeline's code so TFX components and remote Beam workers import it.

`make` installs it (editable) into .venv; its pinned dependencies come from
requirements/requirements.lock, not from here.
"""

import setuptools

setuptools.setup(
    name="tfx-multitask-recommender",
    version="0.1.0",
    description="TFX pipeline for multi-task recommendation models",
    packages=["pipeline", "components", "recommender", "data", "results", "schemas", "configs"],
    # The files the code reads: the curated schema and the config presets.
    package_data={"schemas": ["*.pbtxt"], "configs": ["*.json"]},
    # The runners, so an installed project runs with `python -m run_local` from any folder.
    py_modules=["run_local", "inspect_metadata"],
    python_requires=">=3.11,<3.12",
    install_requires=["tfx==1.21.0"],
)
