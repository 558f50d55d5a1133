"""The autoscaler of the Swarm stack: each service's load from Prometheus in, its replica
count (between the service's ``wwws.scale.min`` and ``wwws.scale.max`` labels) out,
through the Docker SDK. ``python -m services.scaler``; docs/deployment.md."""
