"""Bradley–Terry reward model: scalar head on a pre-trained or SFT backbone (kind: reward_model).

CPU (local Ray started on demand, 2 workers on 2 cores):
    python jobs/reward_model.py --config jobs/configs/tiny/reward_model.yaml
One GPU machine (bf16 and NCCL switch on by capability):
    python jobs/reward_model.py --config jobs/configs/tiny/reward_model.yaml --set resources.gpus_per_worker=1
Cluster (Ray Jobs API; storage shared by the nodes):
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/reward_model.py --config jobs/configs/tiny/reward_model.yaml --storage s3://bucket/forge_runs \
        --set resources.num_workers=16 --set resources.gpus_per_worker=1
"""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("reward_model", __doc__))
