import pytest
import torch

from mimlens.models import build_model


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {
    # 32 px; ViT: patch 8, depth 2, width 48; Swin/SwinV2: patch 4, window 4, two stages of width 48/96
    "vit": lambda **kw: build_model("vit-micro-32", depth=2, **kw),
    "swin": lambda **kw: build_model("swin-tiny-64", img_size=32, depths=(2, 2), num_heads=(3, 6), **kw),
    "swinv2": lambda **kw: build_model("swinv2-tiny-64", img_size=32, depths=(2, 2), num_heads=(3, 6), **kw),
}


@pytest.fixture
def tiny():
    return TINY


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g)


def fit_fixed_batch(model, batch, steps=12, lr=2e-3):
    """Losses of ``steps`` AdamW updates on one fixed batch (the objective's gradient signal, no engine)."""
    from mimlens.engine import build_optimizer

    optimizer = build_optimizer(model, lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        if hasattr(model, "on_step"):
            model.on_step(step, steps)
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def fit():
    return fit_fixed_batch
