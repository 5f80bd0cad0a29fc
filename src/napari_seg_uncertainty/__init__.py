"""napari-seg-uncertainty: segmentation uncertainty from multi-rater annotations."""

__version__ = "0.1.0"
