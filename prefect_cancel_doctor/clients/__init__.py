"""The clients: read-only httpx clients of the Prefect API (`prefect_api`, its records parsed at
the boundary in `prefect_records`, its connection in `settings`), the Docker Engine
(`docker_api`) and Kubernetes (`kube_api`, `kube_config`), over one bounded transport
(`_http`, `_bounded_net`: a total deadline a request, a size cap a response)."""
