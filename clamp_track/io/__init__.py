"""File formats: video reading, the result store, CSV / DeepLabCut / COCO readers and writers."""
