"""The autopilot's policy: the built-in `safe`, files in TOML and JSON, and what is refused when read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefect_cancel_doctor.act.policy import SAFE_CAUSES, PolicyError, load_policy, parse_policy, safe_policy
from prefect_cancel_doctor.model import Cause

TEAM_POLICY = """\
# what our team lets the autopilot do
name = "etl-team"
causes = ["orphaned_infrastructure", "child_process_survives"]
min_confidence = 0.95
stuck_for = "15m"
max_runs_per_cycle = 1
max_actions_per_hour = 4
grace = "10s"
work_pools = ["etl"]
"""


def test_safe_is_the_four_causes_that_need_no_judgement_at_0_9_after_10_minutes() -> None:
    safe = load_policy("safe")
    assert safe == safe_policy()
    assert safe.causes == {
        Cause.ORPHANED_INFRASTRUCTURE,
        Cause.CHILD_PROCESS_SURVIVES,
        Cause.INFRASTRUCTURE_GONE,
        Cause.NEVER_STARTED,
    }
    assert set(SAFE_CAUSES) == safe.causes
    assert (safe.min_confidence, safe.stuck_for_seconds, safe.grace_seconds) == (0.9, 600.0, 30.0)
    assert (safe.max_runs_per_cycle, safe.max_actions_per_hour, safe.work_pools) == (3, 10, frozenset())


def test_a_team_policy_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "autopilot.toml"
    path.write_text(TEAM_POLICY)
    policy = load_policy(str(path))
    assert policy.name == "etl-team"
    assert policy.causes == {Cause.ORPHANED_INFRASTRUCTURE, Cause.CHILD_PROCESS_SURVIVES}
    assert (policy.min_confidence, policy.stuck_for_seconds, policy.grace_seconds) == (0.95, 900.0, 10.0)
    assert (policy.max_runs_per_cycle, policy.max_actions_per_hour) == (1, 4)
    assert policy.work_pools == {"etl"}
    # Its document reads back as the same policy (what the events carry).
    assert parse_policy(policy.to_dict()) == policy


def test_the_same_in_json_and_the_defaults_of_what_it_leaves_out(tmp_path: Path) -> None:
    path = tmp_path / "nightly.json"
    path.write_text(json.dumps({"causes": ["infrastructure_gone"], "stuck_for": 120}))
    policy = load_policy(str(path))
    assert policy.name == "nightly"  # the file's name, when the policy gives none
    assert policy.causes == {Cause.INFRASTRUCTURE_GONE} and policy.stuck_for_seconds == 120.0
    assert policy.min_confidence == 0.9 and policy.max_runs_per_cycle == 3 and policy.grace_seconds == 30.0


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"causes": ["orphaned_infrastructure"], "min_confidense": 0.5}, "unknown key(s) min_confidense"),
        ({"min_confidence": 0.9}, "names the causes it may act on"),
        ({"causes": []}, "a list of at least one cause"),
        ({"causes": ["stuck"]}, "'stuck' is no cause"),
        ({"causes": ["uninterruptible_io"]}, "resolve never acts on uninterruptible_io"),
        ({"causes": ["not_attachable"]}, "resolve never acts on not_attachable"),
        ({"causes": ["unknown"]}, "resolve never acts on unknown"),
        ({"causes": ["infrastructure_gone"], "min_confidence": 1.5}, "not between 0 and 1"),
        ({"causes": ["infrastructure_gone"], "min_confidence": True}, "a number between"),
        ({"causes": ["infrastructure_gone"], "stuck_for": "soon"}, "stuck_for:"),
        ({"causes": ["infrastructure_gone"], "stuck_for": "30d"}, "over a week"),
        ({"causes": ["infrastructure_gone"], "max_actions_per_hour": -1}, "a whole number"),
        ({"causes": ["infrastructure_gone"], "max_runs_per_cycle": 2.5}, "a whole number"),
        ({"causes": ["infrastructure_gone"], "work_pools": "etl"}, "a list of work pool names"),
        ({"causes": ["infrastructure_gone"], "name": "\x1b[2Jteam"}, "no control characters"),
    ],
)
def test_what_a_policy_may_not_say(document: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(document)


def test_files_that_are_no_policy(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy"):
        load_policy(str(tmp_path / "missing.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("causes = [orphaned_infrastructure")
    with pytest.raises(PolicyError, match="is not valid TOML"):
        load_policy(str(broken))
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(PolicyError, match="a policy is a table of keys"):
        load_policy(str(listed))
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * 70_000)
    with pytest.raises(PolicyError, match="not a policy"):
        load_policy(str(huge))
