"""Stanford Cars preparation, kept under this name for readers of the 2020 thesis.

The preparation lives in ``datasets/prepare/``:

- ``pipeline.py``: ``prepare_dataset`` step by step, and the ``PrepareReport`` it returns.
- ``layouts.py``: which raw download layout a folder holds (updated, original, extracted).
- ``annotations.py``: the MATLAB annotation files turned into one record per image.
- ``archives.py``: tar archives streamed member by member, unsafe member names refused.
- ``images.py``: annotated images decoded once and copied unchanged into the build folder.
- ``photos.py``: a folder of photos, one sub-folder per class, split and converted.
- ``output.py``: the output folder: checks, work folders beside it, the swap, marker and CSVs.
"""

from datasets.prepare import MARKER_NAME, PrepareReport, prepare_dataset, read_marker

__all__ = ["MARKER_NAME", "PrepareReport", "prepare_dataset", "read_marker"]
