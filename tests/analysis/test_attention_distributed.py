"""``attention_stats`` and ``diagnostics`` under ``torchrun``: two gloo processes, each its own shard, equal one
process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from mimlens.analysis.attention import attention_stats
from mimlens.analysis.diagnostics import diagnostics

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from timm.models.vision_transformer import VisionTransformer
    from mimlens import distributed
    from mimlens.errors import MimlensError
    from mimlens.analysis.attention import attention_stats
    from mimlens.analysis.diagnostics import diagnostics

    distributed.init("cpu")
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, reg_tokens=1)
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    shard = images[distributed.rank() :: distributed.world_size()]
    found = {"stats": attention_stats(model, shard, batch_size=2).to_json(),
             "diagnostics": diagnostics(model, shard, batch_size=2).to_json()}
    for name, measure in (("attention_stats", attention_stats), ("diagnostics", diagnostics)):
        try:
            measure(model, shard if distributed.is_main() else [])
            found[f"empty {name}"] = "no error"
        except MimlensError as error:
            found[f"empty {name}"] = str(error)
    json.dump(found, open(f"{sys.argv[1]}.{distributed.rank()}", "w"))
    distributed.shutdown()
    """
)


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    result = subprocess.run([*command, str(tmp_path / "out")], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, reg_tokens=1)
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    one, one_diagnostics = attention_stats(model, images).to_json(), diagnostics(model, images).to_json()
    for rank in range(2):
        out = json.loads((tmp_path / f"out.{rank}").read_text())
        two, two_diagnostics = out["stats"], out["diagnostics"]
        assert two["num_images"] == two_diagnostics["num_images"] == 5
        for a, b in zip(one["layers"], two["layers"], strict=True):
            assert b["distance_px"] == pytest.approx(a["distance_px"], rel=1e-6)
            assert b["entropy"] == pytest.approx(a["entropy"], rel=1e-6)
            assert torch.tensor(b["head_kl"]) == pytest.approx(torch.tensor(a["head_kl"]), rel=1e-5, abs=1e-9)
        for a, b in zip(one_diagnostics["blocks"], two_diagnostics["blocks"], strict=True):
            assert b["nmi"] == pytest.approx(a["nmi"], rel=1e-6)
            assert b["high_frequency_share"] == pytest.approx(a["high_frequency_share"], rel=1e-6)
            assert b["norm"] == pytest.approx(a["norm"], rel=1e-6)
            assert b["high_norm_positions"] == a["high_norm_positions"]
            assert b["prefix_norms"] == pytest.approx(a["prefix_norms"], rel=1e-6)
        for name in ("attention_stats", "diagnostics"):  # every rank raises; none hangs
            assert "1 of 2 ranks saw no images" in out[f"empty {name}"]
