"""Local cluster tooling (python -m cluster.local) and production cluster configs."""
