"""Tiny glue servers for the bench: the naive floor and the peers' entry points."""
