"""Checkpoints written atomically: a kill at any moment leaves the previous file whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from utils.files import replacing

TEMP_SUFFIX = ".partial"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but into a temporary file beside the target, flushed to
    disk and renamed over it: a reader (or a resumed run) sees the old checkpoint or the new
    one, never half of one. A failed write removes its temporary file and re-raises."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with replacing(path, suffix=TEMP_SUFFIX, fsync=True) as tmp, tmp.open("wb") as handle:
            torch.save(checkpoint, handle)


def leftover_partials(folder: Path) -> list[Path]:
    """Temporary files a killed write left behind (harmless; removed when a run resumes)."""
    return sorted(folder.glob(f".*{TEMP_SUFFIX}")) if folder.is_dir() else []
