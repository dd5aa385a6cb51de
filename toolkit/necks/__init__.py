"""Necks fuse a backbone's pyramid levels; shared by detection and segmentation."""

from toolkit.necks.fpn import fpn

__all__ = ["fpn"]
