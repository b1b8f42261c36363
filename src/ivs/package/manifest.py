"""The package manifest: everything the sensor needs to run a model, and nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ivs.isp import InputSpec

FORMAT = "ivs-model/1"

Task = Literal["classification", "detection", "face", "keypoints", "segmentation", "benchmark"]


class ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Member holding the network, e.g. model.onnx.")
    format: Literal["onnx", "openvino", "tflite"] = Field(description="How the network is stored.")
    precision: Literal["int8", "fp32", "fp16"] = Field(description="Weight precision.")
    weights: str | None = Field(None, description="Separate weights member (OpenVINO IR's .bin).")


class DecoderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Registered decoder (see `ivs.decode.names()`).")
    params: dict[str, Any] = Field(default_factory=dict, description="Decoder parameters.")


class LayerWeight(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    bytes: int


class BudgetReport(BaseModel):
    """Memory a package needs, compared with the budget it was packed for."""

    model_config = ConfigDict(extra="forbid")

    budget_bytes: int = Field(description="The budget the package was checked against.")
    weight_bytes: int = Field(description="Bytes of all initializers (weights, biases, scales).")
    peak_activation_bytes: int = Field(description="Largest sum of live intermediate tensors at any step, batch 1.")
    largest_layers: list[LayerWeight] = Field(description="The heaviest initializers, largest first.")
    fits: bool = Field(description="weight_bytes + peak_activation_bytes <= budget_bytes.")

    @classmethod
    def of(
        cls, budget_bytes: int, weight_bytes: int, peak: int, layer_bytes: Iterable[tuple[str, int]], top: int
    ) -> BudgetReport:
        """The report of one model, whatever its format: the `top` heaviest of `layer_bytes`."""
        largest = sorted(layer_bytes, key=lambda kv: -kv[1])[:top]
        return cls(
            budget_bytes=budget_bytes,
            weight_bytes=weight_bytes,
            peak_activation_bytes=peak,
            largest_layers=[LayerWeight(name=n, bytes=b) for n, b in largest],
            fits=weight_bytes + peak <= budget_bytes,
        )


class Manifest(BaseModel):
    """manifest.json of a package. Signed as bytes; every member's sha256 is listed here."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["ivs-model/1"] = Field("ivs-model/1", description="Package format version.")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="Model name.")
    version: str = Field(description="Model version, e.g. 1.0.0.")
    task: Task = Field(description="What the model does.")
    description: str = Field("", description="One line for humans.")
    notice: str | None = Field(
        None, description="A caveat every output of this model repeats (e.g. untrained weights)."
    )
    model: ModelFile
    input: InputSpec
    outputs: dict[str, str] = Field(description="Decoder role -> output tensor name.")
    labels: list[str] = Field(description="Class names; class_id indexes this list.")
    decoder: DecoderSpec
    assets: dict[str, str] = Field(
        default_factory=dict, description="Decoder asset role -> .npy member (e.g. anchors)."
    )
    runtime_hints: dict[str, Any] = Field(
        default_factory=dict, description="e.g. {'threads': 2, 'preferred': 'onnxruntime'}."
    )
    budget: BudgetReport | None = None
    upstream: dict[str, str] = Field(
        default_factory=dict, description="Where the weights came from, and their licence."
    )
    members: dict[str, str] = Field(description="Member path -> sha256 hex of its bytes.")
