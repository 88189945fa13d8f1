"""The domain travels as typed records and closed vocabularies, not as API dicts and strings."""

from __future__ import annotations

import re
from pathlib import Path

from prefect_cancel_doctor.model import InfraKind
from prefect_cancel_doctor.scan import engine

PACKAGE = Path(engine.__file__).parent

#: Where an untyped JSON object may appear, and why.
UNTYPED_ALLOWED = {
    # The boundaries: JSON from the Prefect API, the Docker Engine, py-spy and TOML is parsed here.
    "prefect_api.py",
    "prefect_records.py",
    "docker_api.py",
    "settings.py",
    # ... and from the Kubernetes API and kubeconfig files (YAML).
    "kube_api.py",
    "kube_config.py",
    # Request bodies the doctor builds (a sidecar container's config, a flow's parameters).
    "kinds/docker/sidecar.py",
    "kinds/kubernetes/pod.py",
    "health/flow.py",
    "agent.py",
    # The events and artifacts the doctor publishes (publish.py), and its own events read back (fleet.py).
    "fleet/publish.py",
    "fleet/protocol.py",
    # The JSON documents the doctor writes: the model serialised.
    "model/report.py",
    "model/serialise.py",
    "health/model.py",
    "render/json.py",
}
_UNTYPED = re.compile(r"(?:dict|Mapping)\[str, Any\]")


def _modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "demo" not in p.relative_to(PACKAGE).parts]


def test_no_api_dict_travels_past_the_clients() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in _modules()
        if str(path.relative_to(PACKAGE)) not in UNTYPED_ALLOWED
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _UNTYPED.search(line)
    ]
    assert offenders == [], "parse into a record at the client instead:\n" + "\n".join(offenders)


def test_roles_and_states_are_enums_not_literals() -> None:
    literal = re.compile(
        r'(?<![\w.])"(engine|child|runner|pid1|CANCELLING|CANCELLED|COMPLETED|CRASHED|ONLINE|OFFLINE|serve)"'
    )
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in _modules()
        if path.name != "model.py" and path.relative_to(PACKAGE).parts[0] != "model"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line) and not line.lstrip().startswith(("#", '"""'))
    ]
    assert offenders == [], "use model.Role / StateType / WorkerStatus / FoundBy:\n" + "\n".join(offenders)


def test_every_infrastructure_kind_has_one_kind_of_target() -> None:
    from prefect_cancel_doctor.kinds.registry import KINDS

    assert sorted(kind.infra for kind in KINDS) == sorted(InfraKind)  # each once, none missing
