"""The read side: what runs did, read back from ML Metadata and the Evaluator's output.

`metadata` is the one ML Metadata reader (and the one definition of "pushed"
and "blessed"); `evaluation` reads TFMA's files; `summary` (one run),
`queries` (runs, models, lineage: `inspect_metadata.py`) and `report` (the
HTML page) are built on those two.
"""
