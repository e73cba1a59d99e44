"""Train a byte-level BPE tokenizer on your corpus (kind: tokenizer).

CPU (local Ray started on demand):
    python jobs/tokenizer.py --config jobs/configs/tiny/tokenizer.yaml
One GPU machine: the same command (tokenizer training is CPU work).
Cluster (Ray Jobs API; storage shared by the nodes):
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/tokenizer.py --config jobs/configs/tiny/tokenizer.yaml --storage s3://bucket/forge_runs
"""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("tokenizer", __doc__))
