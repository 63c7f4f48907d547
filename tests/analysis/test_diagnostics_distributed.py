"""``diagnostics`` under ``torchrun``: two gloo processes, each its own shard, equal one process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from mimlens.analysis.diagnostics import diagnostics

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from timm.models.vision_transformer import VisionTransformer
    from mimlens import distributed
    from mimlens.errors import MimlensError
    from mimlens.analysis.diagnostics import diagnostics

    distributed.init("cpu")
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, reg_tokens=1)
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    shard = images[distributed.rank() :: distributed.world_size()]
    result = diagnostics(model, shard, batch_size=2)
    try:
        diagnostics(model, shard if distributed.is_main() else [])
        empty = "no error"
    except MimlensError as error:
        empty = str(error)
    json.dump({"result": result.to_json(), "empty": empty}, open(f"{sys.argv[1]}.{distributed.rank()}", "w"))
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
    one = diagnostics(model, images).to_json()
    for rank in range(2):
        out = json.loads((tmp_path / f"out.{rank}").read_text())
        two = out["result"]
        assert two["num_images"] == 5
        for a, b in zip(one["blocks"], two["blocks"], strict=True):
            assert b["nmi"] == pytest.approx(a["nmi"], rel=1e-6)
            assert b["high_frequency_share"] == pytest.approx(a["high_frequency_share"], rel=1e-6)
            assert b["norm"] == pytest.approx(a["norm"], rel=1e-6)
            assert b["high_norm_positions"] == a["high_norm_positions"]
            assert b["prefix_norms"] == pytest.approx(a["prefix_norms"], rel=1e-6)
        assert "1 of 2 ranks saw no images" in out["empty"]
