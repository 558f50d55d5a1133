"""A read-only Docker API in front of the engine's socket, for Traefik and Prometheus."""
