"""Docker containers: located through the Engine API (`locate`), sampled from the host or from a
sidecar container sharing the target's PID namespace (`sidecar`)."""
