"""Checkpoints written atomically: a kill at any moment leaves the previous file whole."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from utils.files import give_umask_permissions

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
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            give_umask_permissions(Path(tmp))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def leftover_partials(folder: Path) -> list[Path]:
    """Temporary files a killed write left behind (harmless; removed when a run resumes)."""
    return sorted(folder.glob(f".*{TEMP_SUFFIX}")) if folder.is_dir() else []
