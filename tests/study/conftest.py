import subprocess

import pytest
from slurm_cluster import OneNodeSlurm, why_not


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node Slurm cluster for this test session (``SLURM_CONF`` set while it runs); skipped, saying why, where
    it cannot start (not root, Slurm, munge or submitit not installed, or the daemons fail to start)."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    cluster = OneNodeSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        try:
            cluster.start()
        except (OSError, RuntimeError, subprocess.CalledProcessError) as error:  # the machine cannot run the daemons
            detail = error.stderr.decode(errors="replace").strip() if getattr(error, "stderr", None) else error
            pytest.skip(f"the one-node Slurm cluster did not start here: {detail}")
        yield cluster
    finally:
        cluster.stop()
