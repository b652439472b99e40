"""Worker for tests/integration/test_horovod.py, launched by ``horovodrun --gloo -np 2``.

Each rank runs allreduce (Sum, Average) on a rank-dependent tensor and broadcasts
a small model from rank 0 (ranks start from different weights), then writes its
results to ``OUT_DIR/rank<r>.json``. Usage: ``python horovod_allreduce_worker.py OUT_DIR``.
"""

from __future__ import annotations

import json
import os
import sys

import horovod.torch as hvd
import torch


def main(out_dir: str) -> None:
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    torch.set_num_threads(1)

    # rank r contributes [r+1, 2(r+1), 3(r+1), 4(r+1)] (exactly representable in float64)
    x = torch.arange(1, 5, dtype=torch.float64) * (rank + 1)
    summed = hvd.allreduce(x, op=hvd.Sum, name="sum")
    averaged = hvd.allreduce(x, op=hvd.Average, name="avg")

    torch.manual_seed(1000 + rank)  # different initial weights on each rank
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    before = [p.detach().flatten().tolist() for p in model.parameters()]
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    after = [p.detach().flatten().tolist() for p in model.parameters()]

    result = {
        "rank": rank,
        "size": size,
        "local_rank": hvd.local_rank(),
        "input": x.tolist(),
        "sum": summed.tolist(),
        "average": averaged.tolist(),
        "weights_before": before,
        "weights_after": after,
    }
    path = os.path.join(out_dir, f"rank{rank}.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(result, fh)
    os.replace(path + ".tmp", path)
    hvd.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
