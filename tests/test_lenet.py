"""LeNet-5's architecture matches the seed's Keras summary."""

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
