import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster when cores are shared


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
