"""Run by ``torchrun --nproc_per_node=2`` from test_data_listing.py: each process builds the image folder (counting
the listings it makes), reads its shard with 2 DataLoader workers, and writes what it saw; rank 0 prints the
skipped-file line."""

import json
import sys
from pathlib import Path

from torch.utils.data import DataLoader, DistributedSampler

from mimlens import distributed
from mimlens.data import listing
from mimlens.data.folders import ImageFiles, skipped_message
from mimlens.data.transforms import eval_transform


def main(root: str, out: str) -> None:
    distributed.init("cpu")
    listed = []
    original = listing.list_folder
    listing.list_folder = lambda folder, threads=16: listed.append(folder) or original(folder, threads)
    data = ImageFiles(root, eval_transform(8, mean=None))
    sampler = DistributedSampler(data, shuffle=False)
    for _ in DataLoader(data, batch_size=2, sampler=sampler, num_workers=2):
        pass
    met = sorted(int(Path(path).stem) for path, _ in data.skipped)  # this process's workers, before gathering
    message = skipped_message(data)
    Path(out).mkdir(exist_ok=True)
    record = {"listed": len(listed), "files": list(data.files), "met": met}
    (Path(out) / f"rank{distributed.rank()}.json").write_text(json.dumps(record))
    if distributed.is_main():
        print(message, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
