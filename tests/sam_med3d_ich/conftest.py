import warnings

import pandas as pd
import pytest

from projects.sam_med3d_ich.synthetic import write_dataset


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """10 patients of 32^3 synthetic head CT in the tool's on-disk layout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_dataset(tmp_path_factory.mktemp("med3d_data"), n_patients=10, shape=(32, 32, 32), seed=3)


@pytest.fixture(scope="session")
def small_root(synthetic_root):
    """4 training cases and 1 validation case of the shared synthetic set."""
    train = pd.read_csv(synthetic_root / "train.csv")
    pd.concat([train[train.ich == 1].head(2), train[train.ich == 0].head(2)]).to_csv(
        synthetic_root / "small_train.csv", index=False)
    val = pd.read_csv(synthetic_root / "val.csv")
    val[val.ich == 1].head(1).to_csv(synthetic_root / "small_val.csv", index=False)
    return synthetic_root
