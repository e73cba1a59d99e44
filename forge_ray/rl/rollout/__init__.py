"""Rollout engines: vLLM (CUDA or CPU build) as Ray actors, HF generate as the fallback."""
