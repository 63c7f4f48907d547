"""similarity_matrix under a real two-process torchrun (gloo, CPU) equals one process on the same images."""

import inspect
import os
import subprocess
import sys
import textwrap

import torch
from torch import nn

from mimlens.analysis.similarity_pass import similarity_matrix


class TokenMixer(nn.Module):
    """A tiny ViT-shaped model (patchify, then ``blocks.<i>``) so the worker needs no timm import."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 12, kernel_size=4, stride=4)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Linear(12, 12), nn.Tanh()) for _ in range(3)])

    def forward(self, x):
        return self.blocks(self.patch(x).flatten(2).transpose(1, 2))


WORKER = """
import os
import sys

import torch
from torch import nn

from mimlens import distributed
from mimlens.analysis.similarity_pass import similarity_matrix

{model_source}

distributed.init("cpu")
out = sys.argv[1]
torch.manual_seed(0)
model_a, model_b = TokenMixer(), TokenMixer()
images = torch.rand(45, 3, 16, 16, generator=torch.Generator().manual_seed(1))
forwards = []
model_a.register_forward_hook(lambda module, args, output: forwards.append(len(args[0])))
kwargs = dict(batch_size=8, k=5, transform_a=nn.Identity(), transform_b=nn.Identity())
within = similarity_matrix(model_a, images, **kwargs)
across = similarity_matrix(model_a, images, model_b, **kwargs)
torch.save({{"forwards": forwards, "within": within.to_json(), "across": across.to_json()}},
           os.path.join(out, f"rank{{distributed.rank()}}.pt"))
if distributed.rank() == 0:
    torch.save({{"a": model_a.state_dict(), "b": model_b.state_dict(), "images": images}},
               os.path.join(out, "inputs.pt"))
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

    # 45 images in batches of 8 -> 8, 8, 8, 8, 8, 5: each rank forwards 3 batches per call, two calls; rank 1
    # also forwards one image of the first batch per call to learn the blocks' widths
    assert sorted(ranks[0]["forwards"]) == [8] * 6 and sorted(ranks[1]["forwards"]) == [1, 1, 5, 5, 8, 8, 8, 8]

    model_a, model_b = TokenMixer(), TokenMixer()
    model_a.load_state_dict(inputs["a"])
    model_b.load_state_dict(inputs["b"])
    kwargs = dict(batch_size=8, k=5, transform_a=nn.Identity(), transform_b=nn.Identity())
    single = {"within": similarity_matrix(model_a, inputs["images"], **kwargs).to_json(),
              "across": similarity_matrix(model_a, inputs["images"], model_b, **kwargs).to_json()}
    for rank in ranks:
        for key, doc in single.items():
            assert rank[key]["num_images"] == 45 and rank[key]["notes"] == doc["notes"]
            for name, matrix in doc["measures"].items():
                # the all-reduced sums add in another order: rounding, and its square root on the Procrustes diagonal
                atol = 1e-7 if name == "procrustes" else 1e-9
                torch.testing.assert_close(torch.tensor(rank[key]["measures"][name]), torch.tensor(matrix),
                                           rtol=0, atol=atol)
            # the calibration (default replicates and permutations) is drawn from the seed and the gathered rows
            assert rank[key]["interval"] and rank[key]["p_value"] and rank[key]["p_value"] == doc["p_value"]
            assert list(rank[key]["interval"]) == list(doc["interval"]) == ["mutual_knn", "cknna", "rsa"]
            for name, bounds in doc["interval"].items():
                for bound in ("low", "high"):
                    torch.testing.assert_close(torch.tensor(rank[key]["interval"][name][bound]),
                                               torch.tensor(bounds[bound]), rtol=0, atol=1e-9)
                torch.testing.assert_close(torch.tensor(rank[key]["null_mean"][name]),
                                           torch.tensor(doc["null_mean"][name]), rtol=0, atol=1e-9)
    assert min(min(row) for row in single["across"]["measures"]["mutual_knn"]) < 0.9
