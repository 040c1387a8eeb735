"""What an image setting may hold, shared by the config that sets it and the checkpoint
metadata that carries it: the largest image side and the per-channel normalization params."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Checked before anything is allocated: an image size of [100000, 100000] would otherwise take
# every byte of memory and be killed by the system without a word.
MAX_IMAGE_SIDE = 4096


class NormParams(BaseModel):
    """Per-channel mean and std for Normalize."""

    model_config = ConfigDict(extra="forbid")
    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: list[float]) -> list[float]:
        if any(not s > 0 for s in value):  # NaN too
            raise ValueError(f"every std must be > 0, got {value}")
        return value

    @field_validator("mean")
    @classmethod
    def _numbers(cls, value: list[float]) -> list[float]:
        if any(m != m for m in value):
            raise ValueError(f"every mean must be a number, got {value}")
        return value

    @model_validator(mode="after")
    def _same_length(self) -> NormParams:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"mean and std must have the same length, got {len(self.mean)} and {len(self.std)}"
            )
        return self
