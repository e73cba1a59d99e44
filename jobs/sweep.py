"""Hyper-parameter sweep of a training spec on Ray Tune, ASHA stopping poor trials (kind: sweep).

CPU (local Ray started on demand; two 1-worker trials at a time on 2 cores):
    python jobs/sweep.py --config jobs/configs/tiny/sweep.yaml
One GPU machine (each trial's worker on a GPU share):
    python jobs/sweep.py --config jobs/configs/tiny/sweep.yaml --set base.resources.gpus_per_worker=0.5
Cluster (Ray Jobs API; trials spread over the nodes; storage shared by the nodes):
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/sweep.py --config jobs/configs/tiny/sweep.yaml --storage /mnt/shared/forge_runs \
        --set max_concurrent=8 --set num_samples=32 --set base.resources.gpus_per_worker=1
"""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("sweep", __doc__))
