"""Startup: `prefect-cancel-doctor --help` and `scan` of an empty server, against Prefect's own CLI.

Starts a quiet local Prefect server with an empty SQLite database, then runs,
taking turns, `prefect-cancel-doctor --help`, `prefect --help`,
`prefect-cancel-doctor scan --format json` and `prefect flow-run ls` (both
against that server, with the same environment), and prints the medians.
Targets: `--help` ≤ 0.15× `prefect --help`; an empty scan ≤ 0.3× `prefect flow-run ls`.

    python -m bench.startup [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench._common import (
    DOCTOR,
    PREFECT,
    alternate,
    client_env,
    command,
    local_server,
    log,
    median,
    print_table,
    ratio_row,
)

#: Prefect and its server stack: never on the scan path. pydantic and anyio are listed to be
#: seen: typer 0.29+ would load pydantic to coerce options (hence typer<0.29), httpcore loads anyio.
HEAVY = ("prefect", "sqlalchemy", "fastapi", "uvicorn", "pydantic", "anyio")

#: What `scan --format json` imports before it does anything (no rich: stderr is not a terminal).
IMPORTS = (
    "import prefect_cancel_doctor.cli, prefect_cancel_doctor.scan.engine, "
    "prefect_cancel_doctor.clients.prefect_api, prefect_cancel_doctor.render.json"
)

SCAN_MODULES = """
import json, sys
sys.argv = ["prefect-cancel-doctor", "scan", "--format", "json"]
from prefect_cancel_doctor.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def scan_modules(env: dict[str, str]) -> tuple[int, list[str]]:
    """How many modules a whole scan loads, and which heavy packages among them."""
    out = subprocess.run(
        [sys.executable, "-c", SCAN_MODULES], env=env, capture_output=True, text=True, check=True
    ).stderr
    modules = json.loads(out.strip().splitlines()[-1])
    heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    return len(modules), heavy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=10, help="runs of each command (after one warm-up)")
    args = parser.parse_args()

    with local_server() as prefect:
        env = client_env(prefect)
        log(f"timing 6 commands x {args.repeat} runs, taking turns")
        times = alternate(
            {
                "doctor --help": command([DOCTOR, "--help"], env),
                "prefect --help": command([PREFECT, "--help"], env),
                "doctor scan": command([DOCTOR, "scan", "--format", "json"], env),
                "prefect flow-run ls": command([PREFECT, "flow-run", "ls"], env),
                "python": command([sys.executable, "-c", "pass"], env),
                "imports": command([sys.executable, "-c", IMPORTS], env),
            },
            repeat=args.repeat,
        )
        count, heavy = scan_modules(env)
    medians = {name: median(values) for name, values in times.items()}
    print_table(
        f"Startup (median of {args.repeat} alternating runs, wall time of the whole process)",
        [
            ratio_row(
                "`prefect-cancel-doctor --help`",
                medians["doctor --help"],
                medians["prefect --help"],
                "s",
                0.15,
                "`prefect --help`",
            ),
            ratio_row(
                "`prefect-cancel-doctor scan`, empty server",
                medians["doctor scan"],
                medians["prefect flow-run ls"],
                "s",
                0.3,
                "`prefect flow-run ls`",
            ),
        ],
        [
            f"Of the empty scan: Python itself {medians['python'] * 1000:.0f} ms, importing the scan path "
            f"{(medians['imports'] - medians['python']) * 1000:.0f} ms; the rest is typer's option parsing, "
            "four API requests (sent together), /proc and the rendering.",
            f"A whole scan loads {count} modules; of {', '.join(HEAVY)}: {', '.join(heavy) or 'none'}.",
            "Min / max (s): " + "; ".join(f"{name} {min(v):.3f} / {max(v):.3f}" for name, v in times.items()),
        ],
    )


if __name__ == "__main__":
    main()
