"""Publish verdicts to Prefect: one event per diagnosed run, a Markdown artifact on the run.

`scan --publish` and `agent` call `publish(api, report, ...)` after a scan. Prefect
is the distributed system that already reaches every host and every person on
call, so a verdict goes where people look:

- an event `prefect-cancel-doctor.verdict` per run this host covers (`covers`),
  whose resource is this host (`prefect-cancel-doctor.host.<host>`) and whose
  related resources are the run, its flow, deployment, work pool and worker, with
  the ids and roles Prefect's own events use (`prefect.flow-run.<id>` as
  `flow-run`, …: prefect/server/models/events.py, prefect/workers/base.py), so
  that it is found by the run's related-resource filter and an Automation can
  match it (the cause is a resource label too: a trigger matches labels, not
  payloads); plus one `prefect-cancel-doctor.host.scanned` event saying what the
  host saw (its work pools and workers), from which the central report tells
  which pools no agent covers;
- a Markdown artifact on each such run (`flow_run_id` set, key
  `cancel-doctor-<run id>`), replaced in place on later scans: whoever opens
  the stuck run in the UI sees the verdict, the stack and the fix.

All events of a scan go in one `POST /events` (split only past
`MAX_BATCH_BYTES`); each event is bounded (`MAX_EVENT_BYTES`: the server drops
an event over 1.5 MB without a word, `PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES`)
by trimming the stack, then the evidence. Text is the report's, already made
inert and redacted where it entered the doctor (`inert.py`, `redact.py`), as in
the JSON; URL passwords are hidden once more, and every secret the doctor holds
(`redact.scrub_tree`: a key a server echoed into a run's record). The API client retries 429 and
502-504 with backoff. A refusal is never fatal: the scan's verdicts are printed
all the same, and `PublishOutcome.errors` says what was not published.
"""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect_cancel_doctor import __version__
from prefect_cancel_doctor.act.autopilot import found_here
from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.redact import scrub_tree
from prefect_cancel_doctor.errors import ApiRefused, DoctorError
from prefect_cancel_doctor.fleet.artifact import ARTIFACT_KEY, artifact_body, artifact_key, text_of
from prefect_cancel_doctor.model import Cause, Diagnosis, Report, Verdict
from prefect_cancel_doctor.proc.roles import worker_options

if TYPE_CHECKING:
    from prefect_cancel_doctor.fleet.autopilot import Autopilot, Round

#: The event of one verdict.
VERDICT_EVENT = "prefect-cancel-doctor.verdict"
#: The event of one scan of one host: what it saw (work pools, workers), what it published.
HOST_EVENT = "prefect-cancel-doctor.host.scanned"
#: The resource id of a host's doctor is this, then the host's name.
HOST_RESOURCE = "prefect-cancel-doctor.host."
#: Resource labels of a verdict event (automations match labels: the cause is one).
CAUSE_LABEL = "prefect-cancel-doctor.cause"
VERSION_LABEL = "prefect-cancel-doctor.version"
#: One event, serialized, at most this long: stacks and evidence are trimmed to fit.
MAX_EVENT_BYTES = 16_000
#: One `POST /events` body at most this long; a larger scan is sent in several.
MAX_BATCH_BYTES = 512_000
#: Frames of the blocking thread an event carries (innermost first).
STACK_FRAMES = 20
#: Evidence sentences an event carries (each at most `artifact.SENTENCE` characters).
EVIDENCE_ITEMS = 8
#: What a host's name may hold in a resource id and a deployment name.
_HOST_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def host_name(env: Mapping[str, str] | None = None) -> str:
    """This host's name for its events and its agent's deployment: `PCD_HOST`, else the hostname.

    In a Kubernetes DaemonSet, set `PCD_HOST` to the node's name (the pod's
    hostname is the pod's). Characters other than letters, digits, `.`, `_`
    and `-` become `-`.
    """
    env = os.environ if env is None else env
    name = (env.get("PCD_HOST") or "").strip() or socket.gethostname() or "unknown-host"
    return _HOST_CHARS.sub("-", name).strip("-")[:200] or "unknown-host"


# -- what this host sees -------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What a host's doctor sees locally: which runs it can answer for."""

    host: str
    #: Work pools with a `prefect worker start` process on this host.
    work_pools: tuple[str, ...] = ()
    #: Names of those workers, where their command line gives one (`--name`).
    workers: tuple[str, ...] = ()
    #: Runs this host launched and whose end it did not see: Prefect 3.9's workspace
    #: supervisor config, left in the temporary directory when the worker died (`launch_traces`).
    launched: frozenset[str] = frozenset()


def seen_here(
    host: str, proc_root: str = "/proc", traces: Callable[[], Mapping[str, str]] | None = None
) -> Seen:
    """The work pools and workers of the `prefect worker start` processes in `proc_root`, and the
    runs this host launched that did not end cleanly (`traces`, default `launch_traces`)."""
    from prefect_cancel_doctor.kinds.process.locate import launch_traces

    pools: set[str] = set()
    workers: set[str] = set()
    try:
        entries = list(Path(proc_root).iterdir())
    except OSError:
        entries = []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        options = worker_options(argv)
        if options is None:
            continue
        if options.get("pool"):
            pools.add(visible(options["pool"], 200))
        if options.get("name"):
            workers.add(visible(options["name"], 200))
    launched = frozenset((traces or launch_traces)())
    return Seen(host, tuple(sorted(pools)), tuple(sorted(workers)), launched)


def covers(d: Diagnosis, seen: Seen) -> bool:
    """Whether this host answers for the run: what it publishes.

    Something of the run is here (processes, a container); or this host launched it
    (Prefect 3.9's workspace config, left when its worker died); or the worker that
    claimed it runs here (`--name`); or no worker claimed it and a worker of its pool
    runs here. Not a run claimed by a worker this host cannot name: in a pool whose
    workers run on several hosts, this host would reason "not here, so gone" about a
    run alive on another host — an Automation acting on that verdict would mark a
    live run Cancelled. Never a run this host cannot see (`not_attachable`), nor a
    verdict read from another host's event.
    """
    run = d.flow_run
    if run is None or d.published is not None or d.verdict.cause is Cause.NOT_ATTACHABLE:
        return False
    if found_here(d) or run.id in seen.launched:
        return True
    worker = run.labels.get("prefect.worker.name")
    if worker not in (None, ""):
        return str(worker) in seen.workers
    return run.work_pool_name is not None and run.work_pool_name in seen.work_pools


# -- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Related:
    """The ids a run's related resources are named by (Prefect's resource ids need ids, not names)."""

    flow_id: str | None = None
    deployment_id: str | None = None
    work_pool_id: str | None = None


def related_ids(api: PrefectApi, runs: Iterable[Diagnosis]) -> dict[str, Related]:
    """Each run's flow, deployment and work pool ids: from its labels (`prefect.flow.id`,
    `prefect.deployment.id`, `prefect.work-pool.id`, which Prefect 3 servers and workers set),
    the rest read in at most two requests."""
    found: dict[str, Related] = {}
    refs = [d.flow_run for d in runs if d.flow_run is not None]
    for ref in refs:
        labels = ref.labels
        found[ref.id] = Related(
            _label(labels, "prefect.flow.id"),
            _label(labels, "prefect.deployment.id"),
            _label(labels, "prefect.work-pool.id"),
        )
    missing = [r.id for r in refs if found[r.id].flow_id is None]
    if missing:
        for run in api.runs_by_id(missing):
            old = found[run.id]
            found[run.id] = Related(run.flow_id, run.deployment_id or old.deployment_id, old.work_pool_id)
    pools = {r.work_pool_name for r in refs if r.work_pool_name and found[r.id].work_pool_id is None}
    if pools:
        ids = api.work_pool_ids(pools)
        for ref in refs:
            if ref.work_pool_name in ids and found[ref.id].work_pool_id is None:
                old = found[ref.id]
                found[ref.id] = Related(old.flow_id, old.deployment_id, ids[ref.work_pool_name])
    return found


def _label(labels: Mapping[str, object], key: str) -> str | None:
    value = labels.get(key)
    return str(value) if value not in (None, "") else None


def _slug(name: str) -> str:
    """A worker's name as Prefect puts it in the worker's resource id (`Worker.get_name_slug`)."""
    try:
        from slugify import slugify  # python-slugify, what Prefect uses; installed with Prefect
    except ImportError:
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    slug: str = slugify(name)
    return slug


def host_resource(host: str) -> dict[str, str]:
    """The resource of this host's doctor."""
    return {
        "prefect.resource.id": HOST_RESOURCE + host,
        "prefect.resource.name": host,
        VERSION_LABEL: __version__,
    }


def related_resources(d: Diagnosis, ids: Related) -> list[dict[str, str]]:
    """The run, its flow, deployment, work pool and worker, as Prefect's own events name them."""
    run = d.flow_run
    assert run is not None
    related = [
        {"prefect.resource.id": f"prefect.flow-run.{run.id}", "prefect.resource.role": "flow-run"}
        | {"prefect.resource.name": text_of(run.name, 200)}
    ]
    if ids.flow_id:
        related.append(_named(f"prefect.flow.{ids.flow_id}", "flow", run.flow_name))
    if ids.deployment_id:
        related.append(_named(f"prefect.deployment.{ids.deployment_id}", "deployment", run.deployment_name))
    if ids.work_pool_id:
        related.append(_named(f"prefect.work-pool.{ids.work_pool_id}", "work-pool", run.work_pool_name))
    worker, kind = _label(run.labels, "prefect.worker.name"), _label(run.labels, "prefect.worker.type")
    if worker and kind:
        related.append(_named(f"prefect.worker.{kind}.{_slug(worker)}", "worker", worker))
    return related


def _named(resource_id: str, role: str, name: str | None) -> dict[str, str]:
    labels = {"prefect.resource.id": resource_id, "prefect.resource.role": role}
    if name:
        labels["prefect.resource.name"] = text_of(name, 200)
    return labels


def verdict_payload(d: Diagnosis, host: str, seen: Seen, stack_frames: int = STACK_FRAMES) -> dict[str, Any]:
    """What a verdict event says: cause, summary, blocking call, confidence, doctor version, host, …"""
    from prefect_cancel_doctor.render.scan_view import blocking_stack

    run = d.flow_run
    assert run is not None
    verdict = d.verdict
    payload: dict[str, Any] = {
        "cause": verdict.cause.value,
        "summary": text_of(verdict.summary, 1000),
        "confidence": verdict.confidence,
        "short_fix": text_of(verdict.short_fix, 200),
        "blocking_call": _call(verdict),
        "also": [{"cause": a.cause.value, "summary": text_of(a.summary, 500)} for a in verdict.also[:5]],
        "remediation": [text_of(fix) for fix in verdict.remediation[:5]],
        "stop_now": [text_of(command, 500) for command in verdict.stop_now[:5]],
        "evidence": [text_of(fact) for fact in verdict.evidence[:EVIDENCE_ITEMS]],
        "stack": [],
        "flow_run": {
            "id": run.id,
            "name": text_of(run.name, 200),
            "state_type": str(run.state_type),
            "state_name": text_of(run.state_name, 200),
            "cancelling_for_seconds": run.cancelling_for_seconds,
            "infrastructure_pid": text_of(run.infrastructure_pid, 300) if run.infrastructure_pid else None,
            "work_pool_name": run.work_pool_name,
        },
        "target": text_of(d.target.description, 300) if d.target else None,
        "found_here": found_here(d),
        "host": host,
        "doctor_version": __version__,
        "ui_url": d.ui_url,
        "seen": {"work_pools": list(seen.work_pools), "workers": list(seen.workers)},
    }
    stack = blocking_stack(d)
    if stack is not None:
        frames = [f"[native] {stack.native}"] if stack.native else []
        frames += [
            f"{f.function} ({f.filename}:{f.line})" + (f"  {f.code.strip()}" if f.code else "")
            for f in stack.frames
        ]
        if stack.omitted:
            frames.append(f"… {stack.omitted} more frame(s) in {', '.join(stack.omitted_modules)}")
        payload["stack"] = [text_of(frame, 300) for frame in frames[:stack_frames]]
        if len(frames) > stack_frames:
            payload["stack"].append(f"… {len(frames) - stack_frames} more frame(s)")
    return payload


def _call(verdict: Verdict) -> dict[str, Any] | None:
    call = verdict.blocking_call
    if call is None:
        return None
    return {
        "kind": call.kind.value,
        "function": text_of(call.function, 300),
        "filename": text_of(call.filename, 500) if call.filename else None,
        "line": call.line,
        "code": text_of(call.code, 300) if call.code else None,
        "thread_name": text_of(call.thread_name, 200) if call.thread_name else None,
        "native": text_of(call.native, 200) if call.native else None,
        "stable": call.stable,
        "waits_on": text_of(call.resource.description) if call.resource else None,
    }


def verdict_event(
    d: Diagnosis, host: str, seen: Seen, ids: Related, now: datetime | None = None
) -> dict[str, Any]:
    """The `prefect-cancel-doctor.verdict` event of one run, at most `MAX_EVENT_BYTES` serialized."""
    occurred = (now or datetime.now(timezone.utc)).isoformat()
    resource = host_resource(host) | {CAUSE_LABEL: d.verdict.cause.value}
    event = {
        "id": str(uuid.uuid4()),
        "occurred": occurred,
        "event": VERDICT_EVENT,
        "resource": resource,
        "related": related_resources(d, ids),
        "payload": verdict_payload(d, host, seen),
    }
    return _bounded(event)


def _bounded(event: dict[str, Any]) -> dict[str, Any]:
    """Trim the payload until the event fits: the stack to 5 frames, then the lists, then the texts."""
    payload = event["payload"]
    for stage in range(4):
        if _size(event) <= MAX_EVENT_BYTES:
            break
        if stage == 0:
            payload["stack"] = payload["stack"][:5]
        elif stage == 1:
            payload["evidence"], payload["remediation"] = payload["evidence"][:2], payload["remediation"][:2]
        elif stage == 2:
            payload.update(stack=[], evidence=[], stop_now=[], also=[], remediation=[])
        else:
            payload.update(summary=payload["summary"][:300], seen={})
        payload["trimmed"] = True
    return event


def _size(document: object) -> int:
    return len(json.dumps(document).encode())


def host_event(
    seen: Seen, published: int, pool_ids: Mapping[str, str], now: datetime | None = None
) -> dict[str, Any]:
    """The `prefect-cancel-doctor.host.scanned` event: this host's work pools and workers, as seen."""
    related = [
        _named(f"prefect.work-pool.{pool_ids[pool]}", "work-pool", pool)
        for pool in seen.work_pools
        if pool in pool_ids
    ][:50]
    return {
        "id": str(uuid.uuid4()),
        "occurred": (now or datetime.now(timezone.utc)).isoformat(),
        "event": HOST_EVENT,
        "resource": host_resource(seen.host),
        "related": related,
        "payload": {
            "host": seen.host,
            "work_pools": list(seen.work_pools[:200]),
            "workers": list(seen.workers[:200]),
            "verdicts_published": published,
            "doctor_version": __version__,
        },
    }


def batches(events: list[dict[str, Any]], limit: int = MAX_BATCH_BYTES) -> list[list[dict[str, Any]]]:
    """The events in as few bodies of at most `limit` bytes as they fit (one, for a usual scan)."""
    out: list[list[dict[str, Any]]] = []
    size = 0
    for event in events:
        length = _size(event) + 2
        if out and size + length <= limit:
            out[-1].append(event)
            size += length
        else:
            out.append([event])
            size = length
    return out


# -- artifacts -------------------------------------------------------------------------------------


# -- publishing ------------------------------------------------------------------------------------


@dataclass
class PublishOutcome:
    """What one publication did, and what it could not do."""

    host: str
    #: Verdict events accepted by the API (the host's own event is not counted).
    events: int = 0
    #: Artifacts created or replaced.
    artifacts: int = 0
    #: Runs left out: this host does not answer for them (`covers`).
    skipped: int = 0
    #: What was not published, and why (one sentence each).
    errors: list[str] = field(default_factory=list)
    #: Other events accepted with them (the autopilot's).
    other_events: int = 0
    #: What the autopilot did this round (None: it is off).
    autopilot: Round | None = None

    def summary(self) -> str:
        """One line for stderr."""
        line = f"published {self.events} verdict event(s), {self.artifacts} artifact(s) as host {self.host}"
        if self.skipped:
            line += (
                f"; {self.skipped} run(s) not published: nothing of them, nor the worker that claimed "
                "them, is on this host (their hosts' doctors answer for them)"
            )
        return line

    def onto(self, report: Report) -> Report:
        """`report` with what could not be published among its errors (its verdicts and exit code kept)."""
        return replace(report, errors=(*report.errors, *self.errors))


def publish(
    api: PrefectApi,
    report: Report,
    *,
    seen: Seen,
    artifacts: bool = True,
    now: datetime | None = None,
    notes: Mapping[str, Sequence[str]] | None = None,
    extra_events: Callable[[Mapping[str, Related]], list[dict[str, Any]]] | None = None,
    agent_deployment: str | None = None,
    settled: Collection[str] = (),
) -> PublishOutcome:
    """Publish the verdicts of the runs this host covers: one batch of events, then the artifacts.

    `notes`: lines for a run's artifact, by run id (what the autopilot did). `extra_events(ids)`:
    more events for the same batch, given every run's related ids (the autopilot's, which may be
    about a run this host does not cover: a resolve asked of the wrong host, refused).
    `agent_deployment`: the agent's deployment serving here, which each artifact names as the
    way to resolve the run from the Prefect UI. `settled`: runs ended since they were diagnosed (by
    the autopilot): no verdict event for them, only their artifact's note and the action's event.
    Never raises for the API: a failure is named in the outcome's `errors` and the
    scan goes on (its verdicts are printed, its exit code is unchanged).
    """
    now = now or datetime.now(timezone.utc)
    mine = [d for d in report.runs if covers(d, seen)]
    outcome = PublishOutcome(seen.host, skipped=sum(1 for d in report.runs if d.flow_run) - len(mine))
    try:
        ids = related_ids(api, mine if extra_events is None else [d for d in report.runs if d.flow_run])
        pool_ids = api.work_pool_ids(seen.work_pools) if seen.work_pools else {}
    except DoctorError as exc:
        # Without ids the event still names the run (ids come from its labels where it has them).
        outcome.errors.append(f"could not read the runs' flow, deployment and pool ids: {exc}")
        ids = {d.flow_run.id: Related() for d in mine if d.flow_run}
        pool_ids = {}
    events = [
        verdict_event(d, seen.host, seen, ids.get(_run_id(d), Related()), now)
        for d in mine
        if _run_id(d) not in settled
    ]
    events.append(host_event(seen, len(events), pool_ids, now))
    events += extra_events(ids) if extra_events is not None else []
    for batch in batches(events):
        verdicts = sum(1 for e in batch if e["event"] == VERDICT_EVENT)
        others = sum(1 for e in batch if e["event"] not in (VERDICT_EVENT, HOST_EVENT))
        try:
            api.post_events(scrub_tree(batch))  # no secret the doctor holds is published
        except DoctorError as exc:
            what = f"{verdicts} verdict event(s)" + (f" and {others} autopilot event(s)" if others else "")
            outcome.errors.append(f"not published: {what} (POST /events failed: {exc})" + _write_hint(exc))
            continue
        outcome.events += verdicts
        outcome.other_events += others
    if artifacts and mine:
        _publish_artifacts(api, report, mine, seen.host, outcome, notes or {}, agent_deployment)
    return outcome


def scan_and_publish(
    api: PrefectApi,
    *,
    host: str,
    samples: int = 3,
    since: str = "1h",
    artifacts: bool = True,
    autopilot: Autopilot | None = None,
    say: Callable[[str], None] = print,
    agent_deployment: str | None = None,
) -> tuple[Report, PublishOutcome]:
    """One agent round (`agent`'s flow, `agent --once`) as `host`: scan, then (with `autopilot`)
    act on what the policy allows, then publish what this host answers for, with what the
    autopilot did (its events, a line in each run's artifact). `agent_deployment`: the served
    deployment, named in each artifact as the way to resolve the run from the UI."""
    from prefect_cancel_doctor.core.durations import parse_duration
    from prefect_cancel_doctor.scan.engine import Options, scan

    seen = seen_here(host)
    report = scan(api, Options(samples=samples, since=parse_duration(since)))
    if autopilot is None:
        return report, publish(api, report, seen=seen, artifacts=artifacts, agent_deployment=agent_deployment)
    from prefect_cancel_doctor.fleet.autopilot import autopilot_cycle

    round_ = autopilot_cycle(api, list(report.runs), seen, autopilot, say=say)
    outcome = publish_round(api, report, seen, round_, artifacts=artifacts, agent_deployment=agent_deployment)
    outcome.autopilot = round_
    return report, outcome


def publish_round(
    api: PrefectApi,
    report: Report,
    seen: Seen,
    round_: Round,
    *,
    artifacts: bool = True,
    agent_deployment: str | None = None,
) -> PublishOutcome:
    """`publish` with what an autopilot round did: its lines in each run's artifact, its events, and
    the runs it settled."""
    return publish(
        api,
        report,
        seen=seen,
        artifacts=artifacts,
        notes=round_.notes(),
        extra_events=lambda ids: round_.events(seen.host, ids),
        agent_deployment=agent_deployment,
        settled=round_.settled(),
    )


def _run_id(d: Diagnosis) -> str:
    assert d.flow_run is not None
    return d.flow_run.id


def _publish_artifacts(
    api: PrefectApi,
    report: Report,
    runs: list[Diagnosis],
    host: str,
    outcome: PublishOutcome,
    notes: Mapping[str, Sequence[str]],
    agent_deployment: str | None = None,
) -> None:
    """Each run's artifact: the latest of its key replaced in place, else created. Stops at the
    first refusal: the next runs' would be refused the same way."""
    keys = {artifact_key(_run_id(d)): d for d in runs}
    if not all(ARTIFACT_KEY.match(key) for key in keys):  # run ids that are no UUIDs
        keys = {key: d for key, d in keys.items() if ARTIFACT_KEY.match(key)}
    done = 0
    try:
        latest = api.latest_artifacts(keys)
        for key, d in keys.items():
            run_notes = notes.get(_run_id(d), ())
            body = scrub_tree(
                artifact_body(d, host, report.api_url, report.generated_at, run_notes, agent_deployment)
            )
            existing = latest.get(key)
            if existing is not None and existing.flow_run_id == _run_id(d):
                api.update_artifact(existing.id, {"data": body["data"], "description": body["description"]})
            else:
                api.create_artifact(body)
            done += 1
    except DoctorError as exc:
        outcome.errors.append(
            f"not published: {len(keys) - done} artifact(s) (the artifacts API failed: {exc})"
            + _write_hint(exc)
        )
    outcome.artifacts += done


def _write_hint(exc: DoctorError) -> str:
    """What to check when a write is refused: a read-only key or role cannot publish."""
    text = str(exc)
    if isinstance(exc, ApiRefused) and ("401" in text or "403" in text) and "CSRF" not in text:
        return (
            "; publishing needs a key (or service account role) that may write events and artifacts: "
            "a read-only one is refused"
        )
    if "413" in text:
        return "; the server or a proxy in front of it refused the body's size"
    return ""


__all__ = [
    "CAUSE_LABEL",
    "HOST_EVENT",
    "HOST_RESOURCE",
    "MAX_BATCH_BYTES",
    "MAX_EVENT_BYTES",
    "VERDICT_EVENT",
    "PublishOutcome",
    "Related",
    "Seen",
    "batches",
    "covers",
    "found_here",
    "host_event",
    "host_name",
    "publish",
    "publish_round",
    "related_ids",
    "related_resources",
    "scan_and_publish",
    "seen_here",
    "verdict_event",
    "verdict_payload",
]
