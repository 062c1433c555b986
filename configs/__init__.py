"""Hydra configuration tree of graft; ships inside the package as `graft.configs`."""
