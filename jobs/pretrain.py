"""Pre-train a model from scratch (or continue from a run) on your corpus (kind: pretrain).

CPU (local Ray started on demand, 2 workers on 2 cores):
    python jobs/pretrain.py --config jobs/configs/tiny/pretrain.yaml
One GPU machine (bf16 and NCCL switch on by capability):
    python jobs/pretrain.py --config jobs/configs/tiny/pretrain.yaml --set resources.gpus_per_worker=1
Cluster (Ray Jobs API; storage shared by the nodes):
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/pretrain.py --config jobs/configs/tiny/pretrain.yaml --storage s3://bucket/forge_runs \
        --set resources.num_workers=16 --set resources.gpus_per_worker=1
"""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("pretrain", __doc__))
