"""Flow programs only the Kubernetes harness stages (the others are the Docker scenarios' files)."""
