"""cka_matrix under a real two-process torchrun (gloo, CPU) equals one process on the same batch partition,
its calibration (half-sample interval, permutation null) included."""

import inspect
import os
import subprocess
import sys
import textwrap

import torch
from torch import nn

from mimlens.analysis.cka import cka_matrix


class TokenMixer(nn.Module):
    """A tiny ViT-shaped model (patchify, then ``blocks.<i>``) so the worker needs no timm import."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 12, kernel_size=4, stride=4)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.LayerNorm(12), nn.Linear(12, 12), nn.GELU()) for _ in range(3)])

    def forward(self, x):
        return self.blocks(self.patch(x).flatten(2).transpose(1, 2))


WORKER = """
import os
import sys

import torch
from torch import nn

from mimlens import distributed
from mimlens.analysis.cka import cka_matrix

{model_source}

distributed.init("cpu")
out = sys.argv[1]
torch.manual_seed(0)
model = TokenMixer()
images = torch.rand(45, 3, 16, 16, generator=torch.Generator().manual_seed(1))
forwards = []
model.register_forward_hook(lambda module, args, output: forwards.append(len(args[0])))
result = cka_matrix(model, images, batch_size=8, transform_a=nn.Identity(), passes=2, bootstrap=20, permutations=10)
torch.save({{"forwards": forwards, "matrix": result.matrix, "spread": result.spread, "notes": result.notes,
            "num_images": result.num_images, "interval": result.interval, "null_mean": result.null_mean,
            "p_value": result.p_value, "replicates": result.off_diagonal_replicates, "images": result.images}},
           os.path.join(out, f"rank{{distributed.rank()}}.pt"))
if distributed.rank() == 0:
    torch.save({{"state": model.state_dict(), "images": images}}, os.path.join(out, "inputs.pt"))
distributed.shutdown()
"""


def test_two_process_torchrun_equals_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(model_source=textwrap.dedent(inspect.getsource(TokenMixer))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    inputs = torch.load(tmp_path / "inputs.pt")

    # 45 images in batches of 8 -> 8, 8, 8, 8, 8, 5: round-robin gives each rank 3 batches per pass, 2 passes
    assert sorted(ranks[0]["forwards"]) == [8, 8, 8, 8, 8, 8] and sorted(ranks[1]["forwards"]) == [5, 5, 8, 8, 8, 8]

    model = TokenMixer()
    model.load_state_dict(inputs["state"])
    single = cka_matrix(model, inputs["images"], batch_size=8, transform_a=nn.Identity(), passes=2, bootstrap=20,
                        permutations=10)
    for rank in ranks:
        torch.testing.assert_close(rank["matrix"], single.matrix, rtol=0, atol=1e-12)
        torch.testing.assert_close(rank["spread"], single.spread, rtol=0, atol=1e-12)
        assert rank["num_images"] == 45 and rank["notes"] == [] and rank["images"] == single.images
        for got, want in zip(rank["interval"], single.interval, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        torch.testing.assert_close(rank["null_mean"], single.null_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(rank["p_value"], single.p_value, rtol=0, atol=0)
        torch.testing.assert_close(torch.tensor(rank["replicates"]), torch.tensor(single.off_diagonal_replicates),
                                   rtol=0, atol=1e-12)
    assert not torch.allclose(single.matrix, torch.ones_like(single.matrix))
