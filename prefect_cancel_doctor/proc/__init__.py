"""What the kernel says about a process: /proc readers (`procfs`, `syscalls`, `resources`),
the roles command lines name (`roles`), files read as a target could (`as_target`), and
CPython's SIGTERM state read from a target's memory (`interpreter`). Imports only the model
and `core`."""
