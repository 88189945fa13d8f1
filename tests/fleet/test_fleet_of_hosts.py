"""A fleet of hosts, each with its agent, and the central report that reads their verdicts.

GIVEN one real Prefect server and four "hosts" on this machine, each its own PID, UTS
(hostname) and mount namespace (`unshare --pid --uts --mount`, a private /tmp), sharing
the network, the filesystem and the kernel:

- `pcd-host-a`: a process worker of pool `fleet-a`, a run stuck in Cancelling there
  (its worker killed, then the cancel: `cancel_not_observed` in `time.sleep`), a standby
  worker of the pool, and `prefect-cancel-doctor agent` serving its deployment;
- `pcd-host-b`: the same with pool `fleet-b` and a run that ignores SIGTERM
  (`signal_ignored`);
- `pcd-host-c`: pool `fleet-c` with a stuck run and a standby worker, but no agent;
- `pcd-central`: nothing but the central `report` and `scan`;

WHEN each agent's deployment (`prefect-cancel-doctor-agent/<host>`) runs,
THEN each publishes the verdict of its own host's run only, and what it sees (its pool
and worker); the central report, which sees none of the runs' processes, shows the run
of host a with host a's verdict and blocking line, the run of host b with host b's,
each marked with its host and age, and lists pool `fleet-c` as covered by no agent;
the central `scan` does the same for its runs.

What this proves and what it does not: each namespace's doctor sees only its own
processes (its /proc is its PID namespace's) and its own hostname, as a separate host
would; but the hosts share one kernel, one network namespace and one filesystem (the
flows' code, PREFECT_HOME), so a Docker engine or a clock that differs per host, or a
network partition between a host and the server, is not exercised.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from prefect_cancel_doctor.demo.catalog import SCENARIO_DIR, marker_line

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.harness import LocalPrefect

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or shutil.which("unshare") is None or os.geteuid() != 0,
        reason="needs Linux, root and util-linux unshare/nsenter (namespaces stand in for hosts)",
    ),
]

HOSTS = {"pcd-host-a": "stuck_sleep.py", "pcd-host-b": "stuck_ignored.py", "pcd-host-c": "stuck_sleep.py"}
FLOWS = {
    "stuck_sleep.py": ("stuck-sleep", "sleep_flow"),
    "stuck_ignored.py": ("stuck-ignored", "ignored_flow"),
}
AGENTS = ("pcd-host-a", "pcd-host-b")
CENTRAL = "pcd-central"


def _progress(message: str) -> None:
    sys.__stderr__.write(f"[fleet {time.strftime('%H:%M:%S')}] {message}\n")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


#: This checkout (its programs are run on every host).
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Host:
    """A PID + UTS + mount namespace with its own hostname and /tmp: a host, as far as the doctor sees."""

    name: str
    logs: Path
    init: subprocess.Popen[bytes]
    #: The namespace's PID 1, as this (the root) namespace numbers it.
    pid: int
    #: Where the host's /tmp is bound inside the namespace (an empty directory outside it).
    keep: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def start(cls, name: str, logs: Path) -> Host:
        # A private /tmp hides the other hosts' files; what this checkout and its Python need
        # (a clone may live under /tmp, as CI's may) is bound back in from the host's /tmp.
        keep, q = f"/run/pcd-fleet-{name}-{os.getpid()}", shlex.quote
        needed = sorted({str(Path(p).resolve()) for p in (REPO, sys.prefix, sys.base_prefix)})
        rebind = "".join(
            f" && mkdir -p {q(path)} && mount --bind {q(keep + path[4:])} {q(path)}"
            for path in needed
            if path.startswith("/tmp/")
        )
        script = (
            f"mkdir -p {keep} && mount --bind /tmp {keep} && mount -t tmpfs tmpfs /tmp{rebind}"
            f" && hostname {name} && exec sleep infinity"
        )
        init = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--uts", "--mount", "sh", "-c", script],
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            inside = _children(init.pid)
            if inside and Path(f"/proc/{inside[0]}/comm").read_text().strip() == "sleep":
                return cls(name, logs, init, inside[0], Path(keep))
            time.sleep(0.05)
        raise RuntimeError(f"namespace host {name} did not start")

    def spawn(self, argv: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        """Start `argv` inside this host (nsenter), its output in `logs/<log>.log`."""
        with (self.logs / f"{self.name}-{log}.log").open("ab") as out:
            popen = subprocess.Popen(
                ["nsenter", "-t", str(self.pid), "-p", "-u", "-m", "--", *argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(popen)
        return popen

    def run(
        self, argv: list[str], env: dict[str, str], timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-p", "-u", "-m", "--", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def kill_alone(self, popen: subprocess.Popen[bytes]) -> None:
        """SIGKILL the program nsenter started (not its children): a crashed worker."""
        for pid in _children(popen.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        popen.wait(15)

    def stop(self) -> None:
        """Kill the namespace's PID 1: the kernel kills every process of the namespace."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        for popen in (self.init, *self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(15)
        with contextlib.suppress(OSError):
            self.keep.rmdir()


@dataclass
class Fleet:
    prefect: LocalPrefect
    hosts: dict[str, Host]
    #: Host → its stuck run's id.
    runs: dict[str, str]
    lines: dict[str, int]

    def env(self, **extra: str) -> dict[str, str]:
        """The server's settings and none of ours: each host names itself (no PCD_HOST)."""
        env = self.prefect.child_env({"PYTHONUNBUFFERED": "1", **extra})
        return {key: value for key, value in env.items() if not key.startswith("PCD_")}


def _worker_env(prefect: LocalPrefect) -> dict[str, str]:
    return prefect.child_env(
        {
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
            "PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )


def _worker(host: Host, pool: str, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    prefect = str(Path(sys.executable).parent / "prefect")
    argv = [prefect, "worker", "start", "--pool", pool, "--type", "process", "--name", name]
    return host.spawn(argv, env, name)


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    pytest.importorskip("prefect")
    from prefect_cancel_doctor.demo.harness import LocalPrefect

    # Outside /tmp: each host mounts its own /tmp, and the flows' code must be seen by all.
    workdir = Path(tempfile.mkdtemp(prefix="pcd-fleet-", dir="/var/tmp"))
    hosts: dict[str, Host] = {}
    try:
        with LocalPrefect(workdir=workdir, log=_progress) as prefect:
            flows_dir, ready = workdir / "flows", workdir / "ready"
            flows_dir.mkdir()
            ready.mkdir()
            for file in set(HOSTS.values()):
                shutil.copy2(SCENARIO_DIR / file, flows_dir / file)
            for name in (*HOSTS, CENTRAL):
                hosts[name] = Host.start(name, prefect.logs_dir)
            runs, workers, lines = {}, {}, {}
            env = _worker_env(prefect)
            for name, file in HOSTS.items():
                pool = "fleet-" + name[-1]
                prefect.create_process_pool(pool)
                flow_name, function = FLOWS[file]
                deployment = prefect.deploy(
                    flow_name=flow_name,
                    entrypoint=f"{file}:{function}",
                    directory=flows_dir,
                    pool=pool,
                    name=f"on-{name}",
                )
                runs[name] = prefect.create_run(deployment, {"ready_path": str(ready / name)})
                workers[name] = _worker(hosts[name], pool, f"{pool}-w1", env)
                lines[name] = marker_line(flows_dir / file)
            prefect.wait_until(
                lambda: all((ready / name).exists() for name in HOSTS), 240, "every host's run to start"
            )
            for name in HOSTS:
                hosts[name].kill_alone(workers[name])  # the worker dies before the cancel ...
                prefect.cancel_run(runs[name])  # ... so nothing acts on it
                _worker(hosts[name], "fleet-" + name[-1], f"fleet-{name[-1]}-w2", env)
            _progress("a run stuck in Cancelling on each of hosts a, b and c; a standby worker on each")
            yield Fleet(prefect, hosts, runs, lines)
    finally:
        for host in hosts.values():
            host.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _api(fleet: Fleet, method: str, path: str, body: object = None) -> Any:
    response = httpx.request(method, f"{fleet.prefect.api_url}/{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else None


def _events(fleet: Fleet, name: str, **filters: Any) -> list[dict[str, Any]]:
    body = {"filter": {"event": {"name": [name]}, "order": "DESC", **filters}}
    return list(_api(fleet, "POST", "events/filter", body)["events"])


@pytest.fixture(scope="module")
def published(fleet: Fleet) -> dict[str, list[dict[str, Any]]]:
    """Each agent served on its host; one run of each agent's deployment, completed."""
    agents = {
        name: fleet.hosts[name].spawn(
            [sys.executable, "-m", "prefect_cancel_doctor", "agent", "--interval", "1h", "--samples", "2"],
            fleet.env(),
            "agent",
        )
        for name in AGENTS
    }
    client = fleet.prefect.client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    def deployment(name: str) -> str | None:
        if agents[name].poll() is not None:  # an agent gone will never register: say why now
            log = (fleet.hosts[name].logs / f"{name}-agent.log").read_text(errors="replace")
            pytest.fail(f"the agent of {name} exited ({agents[name].returncode}):\n{log[-4000:]}")
        try:
            return str(client.read_deployment_by_name(f"prefect-cancel-doctor-agent/{name}").id)
        except (ObjectNotFound, PrefectHTTPStatusError):  # a busy SQLite server may answer 500
            return None

    fleet.prefect.wait_until(lambda: all(deployment(n) for n in AGENTS), 300, "each agent's deployment")
    agent_runs = {}
    for name in AGENTS:
        deployment_id = deployment(name)
        assert deployment_id is not None
        agent_runs[name] = fleet.prefect.create_run(deployment_id, {})
    for name, run_id in agent_runs.items():
        state = fleet.prefect.wait_for_state(run_id, ["COMPLETED", "FAILED", "CRASHED"], 180)
        assert state == "COMPLETED", (name, fleet.hosts[name].logs)
    _progress("each agent's deployment ran on its host")

    def verdicts() -> dict[str, list[dict[str, Any]]] | None:
        found = {
            host: _events(fleet, "prefect-cancel-doctor.verdict", related={"id": [f"prefect.flow-run.{run}"]})
            for host, run in fleet.runs.items()
        }
        return found if all(found[name] for name in AGENTS) else None

    deadline = time.monotonic() + 60
    while (found := verdicts()) is None:
        assert time.monotonic() < deadline, "the agents' verdict events did not arrive"
        time.sleep(0.5)
    return found


def test_each_agent_publishes_its_own_hosts_run_and_what_it_sees(
    fleet: Fleet, published: dict[str, list[dict[str, Any]]]
) -> None:
    for name, cause in (("pcd-host-a", "cancel_not_observed"), ("pcd-host-b", "signal_ignored")):
        hosts = {e["resource"]["prefect.resource.id"] for e in published[name]}
        assert hosts == {f"prefect-cancel-doctor.host.{name}"}  # no other host answered for it
        payload = published[name][0]["payload"]
        assert payload["cause"] == cause and payload["found_here"] is True
        assert payload["blocking_call"]["line"] == fleet.lines[name]
        assert payload["seen"]["work_pools"] == [f"fleet-{name[-1]}"]
    assert published["pcd-host-c"] == []  # no agent there
    scanned = {
        e["payload"]["host"]: e["payload"] for e in _events(fleet, "prefect-cancel-doctor.host.scanned")
    }
    assert set(scanned) == set(AGENTS)
    assert scanned["pcd-host-a"]["work_pools"] == ["fleet-a"]
    assert scanned["pcd-host-a"]["workers"] == ["fleet-a-w2"]
    assert scanned["pcd-host-b"]["work_pools"] == ["fleet-b"]


def test_the_central_report_shows_every_runs_verdict_with_its_host_and_the_uncovered_pool(
    fleet: Fleet, published: dict[str, list[dict[str, Any]]]
) -> None:
    done = fleet.hosts[CENTRAL].run(
        [
            sys.executable,
            "-m",
            "prefect_cancel_doctor",
            "report",
            "--since",
            "1h",
            "--format",
            "json",
            "--samples",
            "1",
        ],
        fleet.env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(done.stdout)
    stuck = {s["flow_run"]["id"]: s for s in document["stuck"]}
    assert set(stuck) == set(fleet.runs.values())
    for name, cause in (("pcd-host-a", "cancel_not_observed"), ("pcd-host-b", "signal_ignored")):
        entry = stuck[fleet.runs[name]]
        assert entry["sampled"] is False  # the central host sees none of the runs' processes
        assert entry["verdict"]["cause"] == cause
        assert entry["verdict"]["blocking_call"]["line"] == fleet.lines[name]
        assert entry["published"]["host"] == name and entry["published"]["found_there"] is True
        assert 0 <= entry["published"]["age_seconds"] < 600
        assert f"on host {name} (its verdict, published " in entry["location"]
    c_run = stuck[fleet.runs["pcd-host-c"]]
    assert c_run["published"] is None
    assert document["uncovered"] == [{"pool": "fleet-c", "runs": [c_run["flow_run"]["name"]], "agents": []}]
    assert {a["host"]: a["work_pools"] for a in document["agents"]} == {
        "pcd-host-a": ["fleet-a"],
        "pcd-host-b": ["fleet-b"],
    }
    markdown = fleet.hosts[CENTRAL].run(
        [sys.executable, "-m", "prefect_cancel_doctor", "report", "--since", "1h", "--format", "markdown",
         "--no-sample"],
        fleet.env(),
    )  # fmt: skip
    assert "## Stuck runs no agent answered for, per work pool (1)" in markdown.stdout, markdown.stdout
    assert "| fleet-c | 1 |" in markdown.stdout


def test_the_central_scan_shows_the_fleets_verdicts_too(
    fleet: Fleet, published: dict[str, list[dict[str, Any]]]
) -> None:
    done = fleet.hosts[CENTRAL].run(
        [sys.executable, "-m", "prefect_cancel_doctor", "scan", "--format", "json", "--samples", "1"],
        fleet.env(),
    )
    assert done.returncode == 1, done.stderr[-3000:]
    runs = {r["flow_run"]["id"]: r for r in json.loads(done.stdout)["runs"]}
    a_run = runs[fleet.runs["pcd-host-a"]]
    assert a_run["published"]["host"] == "pcd-host-a"
    assert a_run["verdict"]["cause"] == "cancel_not_observed"
    assert a_run["target"]["host"] == "pcd-host-a"
    # Host a's commands name its PIDs (PID 8 there is another process here): not offered as this host's.
    assert a_run["verdict"]["stop_now"] == []
    fixes = a_run["verdict"]["remediation"]
    assert fixes[0].startswith("end it now, on host pcd-host-a (not here): `prefect-cancel-doctor resolve ")
    assert fixes[1].startswith("or by hand, on host pcd-host-a (not here): `kill")
    assert "published" not in runs[fleet.runs["pcd-host-c"]]
    assert "note: work pool fleet-c: no agent covers it" in done.stderr
