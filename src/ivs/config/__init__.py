"""The sensor's YAML configuration: one file describes a sensor, validated with line numbers.

    ivs config check examples/retail-counting.yaml
    ivs run --config examples/retail-counting.yaml

Every field is described here (`ivs config schema` prints the JSON Schema); unknown keys are
errors. Checks that need the world (the frame size of the source, the labels of the model)
run in `check_against`, so a line outside the frame or a zone of a class the model does not
know is caught before the sensor starts.

The package: `sensor.py` (the models), `check.py` (reading and refusing a file, with lines).
"""

from ivs.config.check import (
    MAX_DEPTH,
    MAX_NODES,
    Problem,
    _line_of,
    check_against,
    load,
    parse,
    read_yaml,
    validation_problems,
)
from ivs.config.sensor import (
    AppConfig,
    DeployConfig,
    EvidenceConfig,
    FiltersConfig,
    MaskConfig,
    ModelConfig,
    ObjectFilterConfig,
    ReconnectConfig,
    SensorConfig,
    SourceConfig,
    TrackerConfig,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "AppConfig",
    "DeployConfig",
    "EvidenceConfig",
    "FiltersConfig",
    "MaskConfig",
    "ModelConfig",
    "ObjectFilterConfig",
    "Problem",
    "ReconnectConfig",
    "SensorConfig",
    "SourceConfig",
    "TrackerConfig",
    "_line_of",
    "check_against",
    "load",
    "parse",
    "read_yaml",
    "validation_problems",
]
