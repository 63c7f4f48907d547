import pytest
import torch
from engine_toys import ToyImages, base_cfg, tiny_vit


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cfg():
    return base_cfg()


@pytest.fixture
def toy_images():
    return ToyImages


@pytest.fixture
def make_vit():
    return tiny_vit
