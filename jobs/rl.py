"""Reinforcement learning (GRPO, PPO, RLOO, REINFORCE++) with vLLM or HF rollouts as Ray actors (kind: rl).

CPU (local Ray started on demand; policy, reference and one rollout engine share 2 cores):
    python jobs/rl.py --config jobs/configs/tiny/rl.yaml
One GPU machine (bf16 and NCCL switch on by capability):
    python jobs/rl.py --config jobs/configs/tiny/rl.yaml --set resources.gpus_per_worker=1
Cluster (Ray Jobs API; storage shared by the nodes):
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/rl.py --config jobs/configs/tiny/rl.yaml --storage /mnt/shared/forge_runs \
        --set resources.num_workers=8 --set resources.gpus_per_worker=1 \
        --set rollout.num_engines=8 --set rollout.gpus_per_engine=1
"""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("rl", __doc__))
