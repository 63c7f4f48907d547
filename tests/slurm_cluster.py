"""A one-node Slurm cluster in a temporary folder, for the tests: ``munged``, ``slurmctld`` and ``slurmd`` run as
root with their key, sockets, state, spool, logs and pid files in that folder and on free ports; ``SLURM_CONF``
points every Slurm command at it. The daemons are stopped by their process ids. Needs root and the Debian
packages ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them); :func:`why_not` says what is missing."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
# job credential lifetime in seconds (AuthInfo cred_expire: Slurm's least; its default is 120). Slurm holds a
# requeued job this long plus one second, so that the credential of its next run is newer than the one slurmd
# revoked when the last run ended: a run started in that same second is killed ("Job credential revoked").
# Nothing wakes the scheduler when that begin time comes (a backfill pass runs only after a change of the jobs or
# nodes): the main scheduling loop every second (sched_interval, default 60) starts the job then.
CRED_EXPIRE = 5
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")


def tool(name: str) -> str | None:
    return shutil.which(name, path=SEARCH)


def why_not() -> str | None:
    """Why no one-node cluster can start here (None: it can)."""
    if os.geteuid() != 0:
        return "the one-node Slurm cluster needs root"
    missing = [name for name in DAEMONS if tool(name) is None]
    if missing:
        return f"Slurm or munge is not installed ({', '.join(missing)} not found): apt-get install slurm-wlm munge"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install 'mimlens[cluster]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(root: Path, host: str) -> str:
    return "\n".join([
        "ClusterName=mimlenstest", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={root / 'munge' / 'munge.sock'},cred_expire={CRED_EXPIRE}",
        f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=1", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        f"NodeName={host} CPUs={os.cpu_count()} RealMemory=100 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


class OneNodeSlurm:
    """``start()`` the daemons in ``root`` (``SLURM_CONF`` set in this process), ``stop()`` them."""

    def __init__(self, root: Path):
        self.root, self.conf = root, root / "slurm.conf"
        self.pid_files = [root / "munge" / "munged.pid", root / "slurmctld.pid", root / "slurmd.pid"]
        self.previous_conf = os.environ.get("SLURM_CONF")

    def start(self) -> None:
        root = self.root
        for folder in ("munge", "state", "spool", "log"):
            (root / folder).mkdir(mode=0o700, parents=True, exist_ok=True)
        key = root / "munge" / "munge.key"
        subprocess.run([tool("mungekey"), "-c", "-k", str(key)], check=True, capture_output=True)
        subprocess.run([tool("munged"), "--force", f"--key-file={key}", f"--socket={root / 'munge' / 'munge.sock'}",
                        f"--pid-file={self.pid_files[0]}", f"--seed-file={root / 'munge' / 'seed'}",
                        f"--log-file={root / 'log' / 'munged.log'}"], check=True, capture_output=True)
        self.conf.write_text(_config(root, socket.gethostname().split(".")[0]))
        os.environ["SLURM_CONF"] = str(self.conf)
        subprocess.run([tool("slurmctld"), "-f", str(self.conf)], check=True, capture_output=True)
        subprocess.run([tool("slurmd"), "-f", str(self.conf)], check=True, capture_output=True)
        deadline = time.time() + 60
        while self.node_state() != "idle":
            if time.time() > deadline:
                raise RuntimeError(f"the test cluster's node is {self.node_state()!r}, not idle; see {root / 'log'}")
            time.sleep(0.5)

    def node_state(self) -> str:
        return subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.strip()

    def stop(self) -> None:
        """Cancel what is left in the queue, then stop slurmd, slurmctld and munged by their process ids."""
        subprocess.run(["scancel", "--user", "root"], capture_output=True)
        for pid_file in reversed(self.pid_files):
            if pid_file.is_file():
                _stop(int(pid_file.read_text().split()[0]))
        if self.previous_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self.previous_conf


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + 20
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
