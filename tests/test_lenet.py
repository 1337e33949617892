"""LeNet-5's architecture matches the seed's Keras summary."""

import pytest
import torch

from digitlab.models.lenet import LeNet5


def test_parameter_count_is_the_seeds():
    assert sum(p.numel() for p in LeNet5().parameters()) == 60_074


def test_forward_maps_a_batch_of_images_to_ten_logits():
    assert LeNet5()(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def test_biases_start_at_zero_like_keras():
    model = LeNet5()
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if hasattr(m, "bias") and m.bias is not None)


def test_standardize_feeds_the_network_mnist_standardised_pixels():
    plain, standardized = LeNet5(), LeNet5(standardize=True)
    standardized.load_state_dict(plain.state_dict())
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(standardized(x), plain((x - 0.1307) / 0.3081))


def test_compile_compiles_the_call_in_place_once():
    model = LeNet5(compile=True)
    keys = list(model.state_dict())
    model.configure_model()  # Lightning calls it when a run starts; torch.compile compiles at the first call
    compiled = model._compiled_call_impl
    assert compiled is not None
    assert list(model.state_dict()) == keys  # checkpoints load into an uncompiled model
    model.configure_model()  # a second stage (test after fit) does not compile again
    assert model._compiled_call_impl is compiled
    uncompiled = LeNet5()
    uncompiled.configure_model()
    assert uncompiled._compiled_call_impl is None


@pytest.mark.slow  # the first call compiles: TorchInductor runs a C++ compiler in processes of its own
def test_the_compiled_call_computes_the_same_logits():
    torch.manual_seed(0)
    model = LeNet5(compile=True)
    keys = list(model.state_dict())
    model.configure_model()
    x = torch.rand(8, 1, 28, 28)
    assert torch.allclose(model(x), model.forward(x), atol=1e-5)
    assert list(model.state_dict()) == keys
