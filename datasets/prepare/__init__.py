"""Turn a raw Stanford Cars download into the folders and CSVs that training reads.

Three raw layouts are recognised (users hold one of them now that the original URLs are gone):

- "updated" release: ``car_ims.tgz``, ``cars_annos.mat``, ``car_devkit.tgz`` (the thesis used
  this one); also accepted already unpacked as ``car_ims/``, ``cars_annos.mat``, ``devkit/``.
- "original" release: ``cars_train.tgz``, ``cars_test.tgz``, ``car_devkit.tgz`` and
  ``cars_test_annos_withlabels.mat``.
- "extracted": torchvision's ``stanford_cars/`` folder (``cars_train/``, ``cars_test/``,
  ``devkit/``, ``cars_test_annos_withlabels.mat``), including Kaggle mirrors that nest the
  images one level deeper (``cars_train/cars_train/``).

A folder of your own photos is recognised too: one sub-folder per class, or ``train/<class>/``
and ``test/<class>/`` (``photos.py``).

The output is the format ``datasets.labels`` describes, plus ``.prepared.json`` (layout, counts
and problems), written last. It is built beside ``out_dir`` and renamed into place only when
complete. Archive members are streamed one by one; links are refused and nothing is written
anywhere but ``out_dir``, whatever the member names say. Every annotated image is decoded once;
missing or broken ones are left out of the CSVs and reported.
"""

from datasets.prepare.output import MARKER_NAME, read_marker
from datasets.prepare.pipeline import PrepareReport, prepare_dataset

__all__ = ["MARKER_NAME", "PrepareReport", "prepare_dataset", "read_marker"]
