"""Kubernetes pods: the Job and pod read from the API (`locate`), sampled on the node or from an
ephemeral container (`pod`), and what the pod says about the run (`facts`)."""
