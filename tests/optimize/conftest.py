"""Optimize tests run torch on one thread (faster on 2 cores) with a private export cache."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread_private_cache(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIRNET_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield
    torch.set_num_threads(threads)
