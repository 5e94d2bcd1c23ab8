"""Readers of CT scans and annotations (SimpleITK): pixels and geometry in, never patient identifiers."""

from vfq.io.ct import read_ct

__all__ = ["read_ct"]
