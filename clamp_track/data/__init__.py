"""Datasets (COCO keypoint files, corrections), top-down transforms and training targets."""
