"""Run a pipeline of stages in order (kind: pipeline), e.g. the demo pipeline.

CPU (local Ray started on demand):
    python jobs/pipeline.py --config jobs/configs/demo.yaml
One GPU machine: the same command; GPU stages pick bf16/NCCL by capability.
Cluster (Ray Jobs API; storage shared by the nodes):
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/pipeline.py --config jobs/configs/demo.yaml --storage s3://bucket/forge_runs
"""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("pipeline", __doc__))
