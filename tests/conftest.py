"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests, the caller's count given back after.

    The models in tests are tiny: one thread is faster than two, and immune to a
    busy CPU. Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
