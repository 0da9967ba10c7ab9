"""Tests of the decoupled operators against an independent float64 reference."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustdc.ops import (
    ANGULARS,
    MAGNITUDES,
    WEIGHTINGS,
    DecoupledConv2d,
    DecoupledLinear,
    WeightProjection,
    decouple,
    orthogonal_penalty,
    project_weights,
    weight_gradients,
)

NORM_EPS = 1e-4


def reference_magnitude(name, norm, alpha, beta, radius):
    """h(|x|) written directly from the formula table."""
    if name == "sphere":
        return torch.full_like(norm, alpha)
    if name == "ball":
        return alpha * torch.clamp(norm, max=radius) / radius
    if name == "tanh":
        return alpha * torch.tanh(norm / radius)
    if name == "linear":
        return alpha * norm
    if name == "seg":
        outer = beta * norm + (alpha - beta) * radius
        return torch.where(norm <= radius, alpha * norm, outer)
    if name == "log":
        return alpha * torch.log(1 + norm)
    if name == "mix":
        return alpha * norm + beta * torch.log(1 + norm)
    raise AssertionError(name)


def reference_angular(name, cos, k):
    theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
    if name == "linear":
        return 1 - 2 * theta / math.pi
    if name == "cosine":
        return torch.cos(theta)
    if name == "sigmoid":
        c = (1 + math.exp(-math.pi / (2 * k))) / (1 - math.exp(-math.pi / (2 * k)))
        e = torch.exp(theta / k - math.pi / (2 * k))
        return c * (1 - e) / (1 + e)
    if name == "sqcosine":
        return torch.sign(cos) * cos**2
    raise AssertionError(name)


def reference_response(patches, weight, magnitude, angular, weighting, alpha, beta, radius, k):
    """Response per (sample, channel, patch) from explicit patch vectors.

    patches: (N, L, D) patch vectors; weight: (C, D). Returns (N, C, L).
    """
    x_norm = (patches.square().sum(-1) + NORM_EPS).sqrt().unsqueeze(1)  # (N, 1, L)
    w_norm = (weight.square().sum(-1) + NORM_EPS).sqrt().view(1, -1, 1)  # (1, C, 1)
    dot = torch.einsum("nld,cd->ncl", patches, weight)
    cos = dot / (x_norm * w_norm)
    g = reference_angular(angular, cos, k)
    if weighting == "none":
        h = reference_magnitude(magnitude, x_norm, alpha, beta, radius)
    elif weighting == "linear":
        h = reference_magnitude(magnitude, x_norm, alpha, beta, radius) * w_norm
    elif weighting == "nonlinear":
        h = reference_magnitude(magnitude, w_norm * x_norm, alpha, beta, radius)
    else:
        h = reference_magnitude(magnitude, x_norm, alpha, beta, radius) * torch.tanh(
            w_norm / radius
        )
    return h * g


def reference_conv(x, layer: DecoupledConv2d, radius):
    """Decoupled convolution computed the slow obvious way, with unfold, in float64."""
    x = x.double()
    weight = layer.weight.detach().double()
    out_h = (
        x.shape[2] + 2 * layer.padding[0] - layer.dilation[0] * (layer.kernel_size[0] - 1) - 1
    ) // layer.stride[0] + 1
    out_w = (
        x.shape[3] + 2 * layer.padding[1] - layer.dilation[1] * (layer.kernel_size[1] - 1) - 1
    ) // layer.stride[1] + 1
    patches = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride).transpose(
        1, 2
    )
    k = float(layer.sigmoid_k) if layer.angular == "sigmoid" else None
    response = reference_response(
        patches,
        weight.flatten(1),
        layer.magnitude,
        layer.angular,
        layer.weighting,
        layer.alpha,
        layer.beta,
        radius,
        k,
    )
    return response.view(x.shape[0], weight.shape[0], out_h, out_w)


def layer_radius(layer):
    return None if layer.radius is None else layer.radius.item()


ALL_COMBINATIONS = list(itertools.product(MAGNITUDES, ANGULARS, WEIGHTINGS))


@pytest.mark.parametrize(
    ("magnitude", "angular", "weighting"),
    ALL_COMBINATIONS,
    ids=["-".join(c) for c in ALL_COMBINATIONS],
)
def test_conv_matches_unfold_reference(magnitude, angular, weighting):
    generator = torch.Generator().manual_seed(torch.seed() % 2**31)
    layer = DecoupledConv2d(
        3,
        5,
        3,
        stride=2,
        padding=1,
        magnitude=magnitude,
        angular=angular,
        weighting=weighting,
        alpha=1.5,
        radius=0.7,
        adaptive_radius=False,
    ).double()
    x = torch.randn(2, 3, 9, 8, generator=generator, dtype=torch.float64)
    # Magnitudes of both sides of the seg and ball corners appear in the data.
    x = x * torch.rand(2, 1, 1, 1, generator=generator, dtype=torch.float64) * 0.5
    expected = reference_conv(x, layer, layer_radius(layer))
    actual = layer(x)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("magnitude", "angular", "weighting"),
    ALL_COMBINATIONS,
    ids=["-".join(c) for c in ALL_COMBINATIONS],
)
def test_linear_matches_reference(magnitude, angular, weighting):
    layer = DecoupledLinear(
        7,
        4,
        magnitude=magnitude,
        angular=angular,
        weighting=weighting,
        radius=1.3,
        adaptive_radius=False,
    ).double()
    x = torch.randn(5, 7, dtype=torch.float64) * torch.rand(5, 1, dtype=torch.float64) * 2
    k = float(layer.sigmoid_k) if angular == "sigmoid" else None
    expected = reference_response(
        x.unsqueeze(1),
        layer.weight.detach(),
        magnitude,
        angular,
        weighting,
        1.0,
        layer.beta,
        layer_radius(layer),
        k,
    ).squeeze(-1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-9, atol=1e-9)


CONV_GEOMETRIES = [
    dict(in_channels=3, out_channels=8, kernel_size=3, stride=1, padding=1, dilation=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=0, dilation=1),
    dict(in_channels=2, out_channels=5, kernel_size=(3, 5), stride=(2, 1), padding=(2, 1)),
    dict(in_channels=3, out_channels=4, kernel_size=3, stride=1, padding=2, dilation=2),
    dict(in_channels=5, out_channels=7, kernel_size=1, stride=1, padding=0, dilation=1),
    dict(in_channels=3, out_channels=4, kernel_size=5, stride=1, padding="same", dilation=1),
]


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=lambda g: str(g))
def test_linear_weighted_is_plain_conv(geometry):
    plain = nn.Conv2d(**geometry, bias=True)
    layer = DecoupledConv2d(
        **geometry, bias=True, magnitude="linear", angular="cosine", weighting="linear"
    )
    layer.load_state_dict(plain.state_dict())
    x = torch.randn(3, geometry["in_channels"], 13, 11)
    expected = plain(x)
    actual = layer(x)
    relative = (actual - expected).norm() / expected.norm()
    assert relative < 1e-5


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES[:4], ids=lambda g: str(g))
def test_padded_conv_matches_reference(geometry):
    layer = DecoupledConv2d(**geometry, magnitude="ball", angular="linear", adaptive_radius=False)
    layer = layer.double()
    x = torch.randn(2, geometry["in_channels"], 10, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_conv(x, layer, layer_radius(layer)))


def test_reflect_padding_mode_matches_explicit_pad():
    layer = DecoupledConv2d(2, 3, 3, padding=1, padding_mode="reflect", magnitude="tanh")
    layer.eval()
    unpadded = DecoupledConv2d(2, 3, 3, padding=0, magnitude="tanh").eval()
    unpadded.load_state_dict(layer.state_dict())
    x = torch.randn(2, 2, 6, 6)
    expected = unpadded(F.pad(x, (1, 1, 1, 1), mode="reflect"))
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("angular", ANGULARS)
def test_gradcheck_conv(magnitude, angular):
    layer = DecoupledConv2d(
        2, 3, 3, padding=1, magnitude=magnitude, angular=angular, learn_sigmoid_k=True
    ).double()
    layer.train()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    params = [p for p in layer.parameters()]

    def run(x, *params):
        return torch.func.functional_call(
            layer,
            {name: p for (name, _), p in zip(layer.named_parameters(), params, strict=True)},
            (x,),
        )

    assert torch.autograd.gradcheck(run, (x, *params), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_gradcheck_linear_layer_weightings(weighting):
    layer = DecoupledLinear(6, 3, weighting=weighting, magnitude="tanh", bias=True).double()
    layer.eval()
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)


def _finite_outputs_and_grads(layer: nn.Module, x: torch.Tensor) -> None:
    x = x.clone().requires_grad_(True)
    output = layer(x)
    assert torch.isfinite(output).all()
    output.float().square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


HARD_INPUTS = {
    "zeros": lambda: torch.zeros(2, 3, 8, 8),
    "zero-border": lambda: F.pad(torch.randn(2, 3, 4, 4), (4, 4, 4, 4)),
    "scaled-1e6": lambda: torch.randn(2, 3, 8, 8) * 1e6,
    "scaled-1e-6": lambda: torch.randn(2, 3, 8, 8) * 1e-6,
}


@pytest.mark.parametrize("case", list(HARD_INPUTS))
@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("angular", ANGULARS)
def test_hard_inputs_stay_finite(case, magnitude, angular):
    layer = DecoupledConv2d(3, 4, 3, padding=2, magnitude=magnitude, angular=angular)
    _finite_outputs_and_grads(layer, HARD_INPUTS[case]())


def test_zero_patch_gives_zero_output():
    layer = DecoupledConv2d(3, 4, 3, padding=1, magnitude="sphere", bias=False)
    assert layer(torch.zeros(1, 3, 5, 5)).abs().max() == 0


@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("angular", ANGULARS)
def test_bfloat16_autocast_stays_finite(magnitude, angular):
    layer = DecoupledConv2d(3, 4, 3, padding=1, magnitude=magnitude, angular=angular)
    x = torch.randn(2, 3, 8, 8) * 1e3
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = layer(x)
    assert output.dtype == torch.bfloat16
    assert torch.isfinite(output).all()
    output.float().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("magnitude", ["sphere", "ball", "tanh"])
@pytest.mark.parametrize("angular", ANGULARS)
@pytest.mark.parametrize("weighting", ["none", "nonlinear", "nonlinear-separate"])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_bounded_operators_stay_within_alpha(magnitude, angular, weighting, scale):
    alpha = 2.5
    layer = DecoupledConv2d(
        3, 6, 3, padding=1, magnitude=magnitude, angular=angular, weighting=weighting, alpha=alpha
    )
    output = layer(torch.randn(4, 3, 8, 8) * scale)
    assert output.abs().max() <= alpha * (1 + 1e-6)


def test_unbounded_operator_exceeds_alpha():
    # Proves that the bound test above can fail.
    layer = DecoupledConv2d(3, 6, 3, padding=1, magnitude="linear", alpha=1.0)
    assert layer(torch.randn(4, 3, 8, 8) * 10).abs().max() > 1.0


def test_eval_uses_running_patch_norm():
    layer = DecoupledConv2d(3, 4, 3, padding=1, magnitude="tanh")
    assert layer.running_norm.item() == 1.0
    x = torch.randn(8, 3, 6, 6) * 3
    layer.train()
    train_output = layer(x)
    x_norm = (
        F.conv2d(x.square().sum(1, keepdim=True), torch.ones(1, 1, 3, 3), padding=1) + NORM_EPS
    ).sqrt()
    torch.testing.assert_close(layer.running_norm, x_norm.mean())
    assert layer.num_batches_tracked.item() == 1

    # A second, different batch moves the running value to the mean of both.
    y = torch.randn(8, 3, 6, 6)
    layer(y)
    y_norm = (
        F.conv2d(y.square().sum(1, keepdim=True), torch.ones(1, 1, 3, 3), padding=1) + NORM_EPS
    ).sqrt()
    torch.testing.assert_close(layer.running_norm, (x_norm.mean() + y_norm.mean()) / 2)

    # Eval mode: the output no longer depends on the batch, only on running_norm.
    layer.eval()
    running = layer.running_norm.clone()
    single = layer(x[:1])
    torch.testing.assert_close(single, layer(x)[:1])
    torch.testing.assert_close(layer.running_norm, running)
    assert not torch.allclose(layer(x), train_output)
    expected = reference_conv(x, layer, layer_radius(layer) * running.item())
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_running_norm_reaches_exponential_average():
    layer = DecoupledConv2d(1, 1, 1, magnitude="tanh", radius_momentum=0.5)
    for value in (1.0, 3.0, 5.0):
        layer(torch.full((1, 1, 1, 1), value))
    # momentum max(0.5, 1/n): 1 -> (1+3)/2 = 2 -> 2 + 0.5 * (5 - 2) = 3.5 (up to norm_eps)
    assert layer.running_norm.item() == pytest.approx(3.5, rel=1e-4)


def test_state_dict_round_trip_reproduces_outputs():
    layer = DecoupledConv2d(
        3, 4, 3, padding=1, magnitude="seg", angular="sigmoid", learn_sigmoid_k=True, bias=True
    )
    x = torch.randn(4, 3, 6, 6)
    layer(x)
    with torch.no_grad():
        layer.radius_param.add_(0.3)
        layer.sigmoid_k.add_(0.1)
    layer.eval()
    state = layer.state_dict()
    assert sorted(state) == [
        "bias",
        "num_batches_tracked",
        "radius_param",
        "running_norm",
        "sigmoid_k",
        "weight",
    ]
    copy = DecoupledConv2d(
        3, 4, 3, padding=1, magnitude="seg", angular="sigmoid", learn_sigmoid_k=True, bias=True
    )
    copy.load_state_dict(state)
    copy.eval()
    torch.testing.assert_close(copy(x), layer(x), rtol=0, atol=0)


def test_state_dict_keys_are_stable():
    keys = {
        "sphere": ["weight"],
        "tanh": ["num_batches_tracked", "radius_param", "running_norm", "weight"],
    }
    for magnitude, expected in keys.items():
        assert sorted(DecoupledConv2d(1, 1, 1, magnitude=magnitude).state_dict()) == expected
    fixed = DecoupledConv2d(1, 1, 1, magnitude="tanh", learn_radius=False, adaptive_radius=False)
    assert sorted(fixed.state_dict()) == ["radius_param", "weight"]
    assert [name for name, _ in fixed.named_parameters()] == ["weight"]


def test_radius_is_positive_and_learned():
    layer = DecoupledConv2d(2, 2, 3, magnitude="ball", radius=0.5)
    assert layer_radius(layer) == pytest.approx(0.5)
    layer(torch.randn(2, 2, 5, 5)).sum().backward()
    assert layer.radius_param.grad is not None
    with torch.no_grad():
        layer.radius_param.fill_(-3.0)
    assert layer_radius(layer) > 0


BAD_ARGUMENTS = [
    (dict(magnitude="tan"), ValueError, r"unknown magnitude 'tan'; expected one of: sphere, ball"),
    (dict(angular="cos"), ValueError, r"unknown angular function 'cos'; expected one of:"),
    (dict(weighting="yes"), ValueError, r"unknown weighting 'yes'; expected one of: none"),
    (dict(radius=0.0), ValueError, r"radius must be a finite number > 0.0001, got 0.0"),
    (dict(radius=-1), ValueError, r"radius must be a finite number > 0.0001, got -1"),
    (dict(alpha=0), ValueError, r"alpha must be a finite number > 0, got 0"),
    (dict(alpha=-2.0), ValueError, r"alpha must be a finite number > 0, got -2.0"),
    (dict(alpha="1"), TypeError, r"alpha must be a number, got str '1'"),
    (dict(groups=2), ValueError, r"groups=1 only, got groups=2"),
    (dict(beta=0.3, magnitude="tanh"), ValueError, r"beta is used only by the magnitudes seg, mix"),
    (dict(radius_momentum=2.0), ValueError, r"radius_momentum must be in \(0, 1\], got 2.0"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_ARGUMENTS, ids=lambda v: str(v))
def test_bad_arguments_raise(kwargs, error, message):
    with pytest.raises(error, match=message):
        DecoupledConv2d(4, 4, 3, **kwargs)


def test_bad_arguments_raise_for_linear():
    with pytest.raises(ValueError, match="unknown magnitude 'ring'"):
        DecoupledLinear(3, 2, magnitude="ring")


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 1, 3, 8, 8), (8,)])
def test_conv_rejects_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"expects a 4-d input \(N, C, H, W\), got shape"):
        DecoupledConv2d(3, 4, 3)(torch.randn(shape))


def test_linear_rejects_wrong_width():
    with pytest.raises(
        ValueError, match=r"expects an input of shape \(\*, 3\), got shape \(2, 4\)"
    ):
        DecoupledLinear(3, 2)(torch.randn(2, 4))


def test_decouple_resnet18_linear_operator_is_plain():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    expected = model(x)
    conv_count = sum(type(m) is nn.Conv2d for m in model.modules())
    decoupled = decouple(model, magnitude="linear", angular="cosine", weighting="linear")
    assert sum(isinstance(m, DecoupledConv2d) for m in decoupled.modules()) == conv_count == 20
    assert not any(type(m) is nn.Conv2d for m in decoupled.modules())
    actual = decoupled(x)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_decouple_resnet18_tanh_keeps_shapes_and_weights():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    first_weight = model.conv1.weight.detach().clone()
    decouple(model, magnitude="tanh", angular="sigmoid", include_linear=True)
    assert isinstance(model.conv1, DecoupledConv2d)
    assert isinstance(model.fc, DecoupledLinear)
    torch.testing.assert_close(model.conv1.weight, first_weight)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_decouple_keeps_dtype_and_mode_and_groups():
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1, bias=True), nn.Linear(2, 2)
    ).double()
    model.eval()
    decouple(model, magnitude="sphere")
    assert type(model[0]) is nn.Conv2d
    assert isinstance(model[1], DecoupledConv2d)
    assert type(model[2]) is nn.Linear
    assert model[1].weight.dtype == torch.float64
    assert not model[1].training


def test_decouple_vgg_style_inplace_relu_backward():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3))
    decouple(model, magnitude="tanh")
    assert model[1].inplace is False
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    model(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_inplace_change_of_output_raises_in_backward():
    layer = DecoupledConv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    output = torch.relu_(layer(x))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        output.sum().backward()


def test_decouple_rejects_bad_operator_before_changing_model():
    model = nn.Sequential(nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="unknown magnitude"):
        decouple(model, magnitude="nope")
    assert type(model[0]) is nn.Conv2d


def test_project_weights_sets_kernel_norms():
    model = nn.Sequential(DecoupledConv2d(3, 5, 3), nn.ReLU(), DecoupledLinear(4, 2))
    project_weights(model, scale=2.0)
    for layer in (model[0], model[2]):
        norms = layer.weight.flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, 2.0))


def test_weight_projection_runs_every_n_steps():
    model = DecoupledConv2d(2, 2, 3)
    with torch.no_grad():
        model.weight.mul_(10)
    projector = WeightProjection(model, every=3)
    assert [projector.step() for _ in range(6)] == [False, False, True, False, False, True]
    with pytest.raises(ValueError, match="every must be an integer >= 1, got 0"):
        WeightProjection(model, every=0)


def test_weight_gradients_scale_unweighted_layers_only():
    unweighted = DecoupledConv2d(2, 3, 3, magnitude="sphere")
    weighted = DecoupledConv2d(3, 3, 3, magnitude="linear", weighting="linear")
    model = nn.Sequential(unweighted, weighted)
    model(torch.randn(2, 2, 7, 7)).sum().backward()
    before_unweighted = unweighted.weight.grad.clone()
    before_weighted = weighted.weight.grad.clone()
    assert weight_gradients(model) == 1
    norms = (unweighted.weight.flatten(1).square().sum(1) + NORM_EPS).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(unweighted.weight.grad, before_unweighted * norms)
    torch.testing.assert_close(weighted.weight.grad, before_weighted)


def test_orthogonal_penalty_is_zero_for_orthonormal_kernels():
    layer = DecoupledLinear(4, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(4) * 3)
    assert orthogonal_penalty(layer, strength=1.0).item() == pytest.approx(0.0, abs=1e-8)
    with torch.no_grad():
        layer.weight.copy_(torch.ones(4, 4))
    # Every off-diagonal entry of the Gram matrix is 1: 12 entries of squared error 1.
    assert orthogonal_penalty(layer, strength=0.5).item() == pytest.approx(6.0, rel=1e-4)


def test_orthogonal_penalty_has_gradient():
    layer = DecoupledConv2d(3, 4, 3)
    orthogonal_penalty(layer).backward()
    assert layer.weight.grad.abs().sum() > 0


def test_compiled_conv_matches_eager():
    layer = DecoupledConv2d(3, 8, 3, padding=1, magnitude="tanh", angular="linear").eval()
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-5)
