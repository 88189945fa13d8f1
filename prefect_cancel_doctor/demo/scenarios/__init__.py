"""Stuck-flow programs, one per scenario (see `prefect_cancel_doctor.demo.catalog`).

Each `stuck_*.py` file holds one Prefect flow that takes `ready_path`, writes
"ready" to it right before its blocking line, then blocks on the line marked
`# demo: blocks here`. The harness copies these files to a temporary directory
and deploys them from there, so they run as user code (not site-packages).
File names start with `stuck_` because the flow's directory lands on the
engine's `sys.path`: a file named `subprocess.py` would shadow the stdlib.
"""
