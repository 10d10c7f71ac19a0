import csv

import numpy as np
from sklearn.metrics import roc_auc_score

from data.synthetic import SyntheticSpec, generate_rows, write_csv
from recommender import features


def test_same_spec_same_bytes(tmp_path):
    spec = SyntheticSpec(num_interactions=500)
    a = write_csv(spec, tmp_path / "a.csv").read_bytes()
    b = write_csv(spec, tmp_path / "b.csv").read_bytes()
    assert a == b
    assert write_csv(SyntheticSpec(num_interactions=500, seed=1), tmp_path / "c.csv").read_bytes() != a


def test_canonical_columns_and_value_ranges(tmp_path):
    path = write_csv(SyntheticSpec(num_interactions=300), tmp_path / "x.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(features.COLUMNS)
    assert len(rows) == 300
    assert {r[features.BINARY_RATING] for r in rows} <= {"0", "1"}
    assert all(0.0 <= float(r[features.PURCHASE_PROBABILITY]) <= 1.0 for r in rows)
    stamps = [int(r[features.TIMESTAMP]) for r in rows]
    assert stamps == sorted(stamps) and stamps[0] > 0


def test_labels_carry_learnable_signal():
    rows = generate_rows(SyntheticSpec(num_interactions=5000))
    # The two labels share the latent affinity, so one ranks the other well above chance.
    assert roc_auc_score(rows[features.BINARY_RATING], rows[features.PURCHASE_PROBABILITY]) > 0.85
    assert 0.3 < rows[features.BINARY_RATING].mean() < 0.7
    assert np.std(rows[features.PURCHASE_PROBABILITY]) > 0.15
