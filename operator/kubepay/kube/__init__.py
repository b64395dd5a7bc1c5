"""Talking to the Kubernetes API outside kopf: the client, the never-backwards status writer, k8s events."""
