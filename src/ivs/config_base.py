"""What every section of a sensor's (and a node's) YAML is: strict settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    # unknown keys are errors; no NaN or infinity (YAML's .nan, .inf): no setting means either
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
