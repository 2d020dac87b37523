import warnings

import pytest

from projects.sam_med3d_ich.synthetic import write_dataset


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """10 patients of 32^3 synthetic head CT in the tool's on-disk layout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_dataset(tmp_path_factory.mktemp("med3d_data"), n_patients=10, shape=(32, 32, 32), seed=3)
