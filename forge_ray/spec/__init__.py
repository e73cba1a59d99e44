"""Typed stage specs: load YAML/JSON strictly, override from the command line, export JSON Schema."""

from forge_ray.spec.load import apply_overrides, build_spec, load_spec, read_raw, schema, spec_to_dict, spec_to_yaml
from forge_ray.spec.stages import STAGES, PipelineStage, StageSpec
from forge_ray.spec.typed import Problem, SpecError

__all__ = ["STAGES", "PipelineStage", "Problem", "SpecError", "StageSpec", "apply_overrides", "build_spec",
           "load_spec", "read_raw", "schema", "spec_to_dict", "spec_to_yaml"]
