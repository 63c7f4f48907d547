import pytest
from slurm_cluster import OneNodeSlurm, why_not


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node Slurm cluster for this test session (``SLURM_CONF`` set while it runs); skipped, saying why, where
    it cannot start (not root, Slurm, munge or submitit not installed)."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    cluster = OneNodeSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
