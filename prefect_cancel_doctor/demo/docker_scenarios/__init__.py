"""Stuck-flow programs run in Docker containers by a real prefect-docker worker.

See `prefect_cancel_doctor.demo.docker_harness.DOCKER_SCENARIOS`. Each
`stuck_docker_*.py` file holds one flow that takes `ready_path` (a file in a
directory bind-mounted into the container), writes "ready" to it right before
its blocking line, then blocks on the line marked `# demo: blocks here`. The
harness copies these files to a temporary directory, bind-mounts it read-only
at the same path in the container and deploys them from there.
"""
