"""Tests of the model registry, the architectures and the in-model normalization."""

from __future__ import annotations

import io
import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustdc.models import (
    CNN9,
    MNIST2D,
    MODELS,
    ConvFactory,
    Normalize,
    build_model,
    count_parameters,
    list_architectures,
    list_operators,
    register,
)
from robustdc.models import registry as registry_module
from robustdc.ops import DecoupledConv2d, DecoupledLinear

ARCHITECTURES = ["cnn9", "mnist2d", "resnet18", "resnet32"]
# Small widths keep every test fast on a CPU. Each gives at least 8 channels per layer.
TEST_WIDTHS = {"cnn9": 0.125, "mnist2d": 0.25, "resnet18": 0.125, "resnet32": 1 / 12}
# (in_channels, height, width) of MNIST-like and CIFAR-like images.
IMAGE_SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}
OPERATORS_UNDER_TEST = ["baseline", "tanhconv", "sphereconv", "segconv"]
# Conv layers per architecture, shortcut projections included.
CONV_COUNTS = {"cnn9": 9, "mnist2d": 6, "resnet18": 1 + 16 + 3, "resnet32": 1 + 30 + 2}
LINEAR_COUNTS = {"cnn9": 1, "mnist2d": 3, "resnet18": 1, "resnet32": 1}
BATCH_SIZE = 3


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # The test tensors are tiny, so extra threads only add synchronization. On a 2-core
    # machine shared with other test runs, this module took 18 to 74 s with two threads
    # and about 6 s with one.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_model(
    arch: str, operator: str, image: str = "cifar", seed: int = 0, **kwargs
) -> nn.Module:
    torch.manual_seed(seed)
    in_channels = IMAGE_SHAPES[image][0]
    kwargs.setdefault("width", TEST_WIDTHS[arch])
    return build_model(arch, operator, in_channels=in_channels, **kwargs)


def make_images(image: str = "cifar", seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((BATCH_SIZE, *IMAGE_SHAPES[image]), generator=generator)


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [module for module in model.modules() if isinstance(module, nn.Conv2d)]


def linears(model: nn.Module) -> list[nn.Linear]:
    return [module for module in model.modules() if isinstance(module, nn.Linear)]


# Registry and names


def test_list_architectures():
    assert list_architectures() == ARCHITECTURES


def test_list_operators():
    assert list_operators() == [
        "baseline",
        "sphereconv",
        "ballconv",
        "tanhconv",
        "linearconv",
        "segconv",
        "logconv",
        "mixconv",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"arch": "resnet33", "operator": "tanhconv"},
            "unknown architecture 'resnet33'; expected one of: cnn9, mnist2d, "
            "resnet18, resnet32. Did you mean 'resnet32'?",
        ),
        (
            {"arch": "cnn9", "operator": "tanhcov"},
            "unknown operator 'tanhcov'; expected one of: baseline, sphereconv, "
            "ballconv, tanhconv, linearconv, segconv, logconv, mixconv. "
            "Did you mean 'tanhconv'?",
        ),
        (
            {"arch": "cnn9", "operator": "TanhConv"},
            "unknown operator 'TanhConv'; expected one of: .*Did you mean 'tanhconv'?",
        ),
        (
            {"arch": "cnn9", "operator": "tanhconv", "angular": "cosin"},
            "unknown angular function 'cosin'; expected one of: linear, cosine, "
            "sigmoid, sqcosine. Did you mean 'cosine'?",
        ),
    ],
    ids=["arch", "operator", "operator-case", "angular"],
)
def test_bad_name_suggests_closest(kwargs, message):
    pattern = message if ".*" in message else re.escape(message)
    with pytest.raises(ValueError, match=pattern):
        build_model(**kwargs)


def test_unrelated_name_has_no_suggestion():
    with pytest.raises(ValueError, match="unknown architecture 'xyz'") as info:
        build_model("xyz", "baseline")
    assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "width must be a finite number > 0, got 0"),
        ({"width": -0.5}, "width must be a finite number > 0, got -0.5"),
        ({"width": math.nan}, "width must be a finite number > 0, got nan"),
        ({"num_classes": 1}, "num_classes must be an integer >= 2, got 1"),
        ({"num_classes": 2.5}, "num_classes must be an integer >= 2, got 2.5"),
        ({"num_classes": True}, "num_classes must be an integer >= 2, got True"),
        ({"in_channels": 0}, "in_channels must be an integer >= 1, got 0"),
    ],
    ids=[
        "width-0",
        "width-negative",
        "width-nan",
        "classes-1",
        "classes-float",
        "classes-bool",
        "channels-0",
    ],
)
def test_bad_size_raises(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model("cnn9", "baseline", **kwargs)


def test_baseline_rejects_other_angular():
    with pytest.raises(ValueError, match="angular function 'sigmoid' needs a decoupled"):
        build_model("cnn9", "baseline", angular="sigmoid")


def test_baseline_rejects_operator_kwargs():
    with pytest.raises(ValueError, match=r"baseline \(nn.Conv2d\) got \['alpha'\]"):
        build_model("cnn9", "baseline", alpha=2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"radious": 2.0}, "DecoupledConv2d has no argument 'radious'"),
        ({"magnitude": "ball"}, "operator argument 'magnitude' is set by"),
        ({"kernel_size": 5}, "operator argument 'kernel_size' is set by"),
    ],
    ids=["unknown", "magnitude", "kernel-size"],
)
def test_bad_operator_kwarg_raises(kwargs, message):
    with pytest.raises(TypeError, match=message):
        build_model("cnn9", "tanhconv", **kwargs)


def test_operator_kwargs_reach_every_conv():
    model = make_model("resnet32", "tanhconv", alpha=2.0, adaptive_radius=False)
    layers = convs(model)
    assert len(layers) == CONV_COUNTS["resnet32"]
    assert all(layer.alpha == 2.0 for layer in layers)
    assert not any(layer.adaptive_radius for layer in layers)


def test_angular_reaches_every_conv():
    model = make_model("cnn9", "ballconv", angular="sigmoid")
    assert all(layer.angular == "sigmoid" for layer in convs(model))
    assert all(layer.magnitude == "ball" for layer in convs(model))


def test_register_duplicate_warns_and_replaces(monkeypatch):
    monkeypatch.setattr(registry_module, "MODELS", dict(MODELS))

    @register("tiny")
    def first(conv, **kwargs):
        return nn.Identity()

    with pytest.warns(UserWarning, match="architecture 'tiny' is already registered"):

        @register("tiny")
        def second(conv, **kwargs):
            return nn.Identity()

    assert registry_module.MODELS["tiny"] is second
    assert "tiny" not in MODELS


def test_register_new_name_does_not_warn(monkeypatch):
    monkeypatch.setattr(registry_module, "MODELS", dict(MODELS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register("tiny")(lambda conv, **kwargs: nn.Identity())
    assert "tiny" in registry_module.list_architectures()


# Forward pass and layer layout


@pytest.mark.parametrize("image", sorted(IMAGE_SHAPES))
@pytest.mark.parametrize("operator", OPERATORS_UNDER_TEST)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_gives_finite_logits(arch, operator, image):
    model = make_model(arch, operator, image, num_classes=7)
    x = make_images(image)

    logits = model(x)

    assert logits.shape == (BATCH_SIZE, 7)
    assert torch.isfinite(logits).all()
    # Different images must give different logits: a model that ignores its input fails.
    assert not torch.allclose(logits[0], logits[1])


@pytest.mark.parametrize("operator", list_operators())
def test_every_operator_builds_cnn9(operator):
    model = make_model("cnn9", operator, "mnist", batch_norm=False)
    logits = model(make_images("mnist"))
    assert logits.shape == (BATCH_SIZE, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("angular", ["linear", "cosine", "sigmoid", "sqcosine"])
def test_every_angular_builds_cnn9(angular):
    model = make_model("cnn9", "tanhconv", angular=angular)
    logits = model(make_images())
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_baseline_has_only_plain_convs(arch):
    model = make_model(arch, "baseline")
    layers = convs(model)
    assert len(layers) == CONV_COUNTS[arch]
    assert all(type(layer) is nn.Conv2d for layer in layers)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tanhconv_has_only_decoupled_convs(arch):
    model = make_model(arch, "tanhconv")
    layers = convs(model)
    assert len(layers) == CONV_COUNTS[arch]
    assert all(isinstance(layer, DecoupledConv2d) for layer in layers)
    assert all(layer.magnitude == "tanh" for layer in layers)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_linear_layers_stay_plain(arch):
    model = make_model(arch, "tanhconv")
    layers = linears(model)
    assert len(layers) == LINEAR_COUNTS[arch]
    assert not any(isinstance(layer, DecoupledLinear) for layer in layers)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_relu_is_not_inplace(arch):
    model = make_model(arch, "tanhconv")
    relus = [module for module in model.modules() if isinstance(module, nn.ReLU)]
    assert relus
    assert not any(relu.inplace for relu in relus)


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no-bn"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batch_norm_flag(arch, batch_norm):
    model = make_model(arch, "tanhconv", batch_norm=batch_norm)
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    expected_norms = CONV_COUNTS[arch] if batch_norm else 0
    assert len(norms) == expected_norms
    # A conv followed by BatchNorm needs no bias. Without BatchNorm it has one.
    assert all((layer.bias is None) == batch_norm for layer in convs(model))


def test_width_scales_cnn9_channels():
    model = build_model("cnn9", "baseline", width=0.5)
    out_channels = [layer.out_channels for layer in convs(model)]
    assert out_channels == [32] * 3 + [64] * 3 + [128] * 3
    assert model.classifier.in_features == 128


def test_resnet32_layout():
    model = build_model("resnet32", "baseline", width=0.25)
    assert [len(stage) for stage in model.stages] == [5, 5, 5]
    assert [stage[0].conv1.out_channels for stage in model.stages] == [24, 48, 96]
    assert [stage[0].conv1.stride for stage in model.stages] == [(1, 1), (2, 2), (2, 2)]
    projections = [
        block
        for stage in model.stages
        for block in stage
        if not isinstance(block.shortcut, nn.Identity)
    ]
    assert len(projections) == 2


def test_resnet18_layout():
    model = build_model("resnet18", "baseline", width=0.25)
    assert [len(stage) for stage in model.stages] == [2, 2, 2, 2]
    assert [stage[0].conv1.out_channels for stage in model.stages] == [16, 32, 64, 128]
    stem = model.stem[0]
    assert stem.kernel_size == (3, 3)
    assert stem.stride == (1, 1)
    assert not any(isinstance(module, nn.MaxPool2d) for module in model.modules())


def test_resnet_projection_is_decoupled():
    model = make_model("resnet18", "tanhconv")
    projection = model.stages[1][0].shortcut[0]
    assert isinstance(projection, DecoupledConv2d)
    assert projection.kernel_size == (1, 1)
    assert projection.stride == (2, 2)


def test_cnn9_fc_head():
    torch.manual_seed(0)
    model = build_model("cnn9", "tanhconv", width=0.125, num_classes=5, arch_kwargs={"head": "fc"})
    layers = linears(model)
    assert [(layer.in_features, layer.out_features) for layer in layers] == [
        (32, 256),
        (256, 5),
    ]
    assert model(make_images()).shape == (BATCH_SIZE, 5)


def test_cnn9_bad_head_raises():
    with pytest.raises(ValueError, match="unknown cnn9 head 'dense'.*pool, fc"):
        build_model("cnn9", "baseline", arch_kwargs={"head": "dense"})


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_classifier_reads_features(arch):
    model = make_model(arch, "tanhconv").eval()
    x = make_images()
    with torch.no_grad():
        expected = model.classifier(model.features(x))
        logits = model(x)
    assert torch.equal(logits, expected)


@pytest.mark.parametrize("image", sorted(IMAGE_SHAPES))
def test_mnist2d_features_are_2d(image):
    model = make_model("mnist2d", "sphereconv", image)
    features = model.features(make_images(image))
    assert features.shape == (BATCH_SIZE, 2)
    assert torch.isfinite(features).all()
    assert model.classifier.in_features == 2


# Normalization inside the model


def test_default_normalization_is_half():
    model = build_model("mnist2d", "baseline", in_channels=1, width=0.25)
    assert model.normalize.mean.tolist() == [0.5]
    assert model.normalize.std.tolist() == [0.5]


def test_stats_are_state_dict_buffers():
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    model = make_model("cnn9", "tanhconv", mean=mean, std=std)
    state = model.state_dict()
    assert torch.allclose(state["normalize.mean"], torch.tensor(mean))
    assert torch.allclose(state["normalize.std"], torch.tensor(std))
    parameter_names = {name for name, _ in model.named_parameters()}
    assert "normalize.mean" not in parameter_names
    assert "normalize.std" not in parameter_names


@pytest.mark.parametrize("operator", ["baseline", "tanhconv"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_model_normalizes_its_input(arch, operator):
    mean, std = (0.2, 0.4, 0.6), (0.1, 0.3, 0.5)
    normalizing = make_model(arch, operator, mean=mean, std=std).eval()
    plain = make_model(arch, operator, mean=0.0, std=1.0, seed=5).eval()
    weights = {
        name: value
        for name, value in normalizing.state_dict().items()
        if not name.startswith("normalize.")
    }
    missing, unexpected = plain.load_state_dict(weights, strict=False)
    assert missing == ["normalize.mean", "normalize.std"]
    assert unexpected == []

    x = make_images()
    mean_tensor = torch.tensor(mean).view(1, 3, 1, 1)
    std_tensor = torch.tensor(std).view(1, 3, 1, 1)
    normalized = (x - mean_tensor) / std_tensor
    with torch.no_grad():
        logits = normalizing(x)
        expected = plain(normalized)
        unnormalized = plain(x)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    # Untrained bounded operators vary little with the input, hence the small margin.
    assert (logits - unnormalized).abs().max() > 1e-4


def test_normalize_broadcasts_one_value():
    normalize = Normalize(3, mean=0.25, std=(0.5,))
    assert normalize.mean.tolist() == [0.25, 0.25, 0.25]
    assert normalize.std.tolist() == [0.5, 0.5, 0.5]
    x = torch.full((1, 3, 2, 2), 0.75)
    assert torch.allclose(normalize(x), torch.ones(1, 3, 2, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"mean": (0.1, 0.2)},
            "mean must have 1 or 3 values (one per input channel), got 2",
        ),
        ({"std": (0.1, 0.0, 0.2)}, "std must be > 0 for every channel"),
        ({"std": -1.0}, "std must be > 0 for every channel"),
        ({"mean": math.inf}, "mean must be finite"),
    ],
    ids=["mean-length", "std-zero", "std-negative", "mean-inf"],
)
def test_bad_normalization_stats_raise(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model("cnn9", "baseline", **kwargs)


def test_wrong_channel_count_raises():
    model = make_model("cnn9", "baseline", "cifar")
    with pytest.raises(ValueError, match=re.escape("expected input of shape (N, 3, H, W)")):
        model(make_images("mnist"))


# Gradients and checkpoints


@pytest.mark.parametrize("operator", ["baseline", "tanhconv", "ballconv"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_input_gradient_is_finite(arch, operator):
    model = make_model(arch, operator, "mnist").eval()
    x = make_images("mnist")
    # An image equal to the mean normalizes to zero, so every patch of the first conv
    # is all-zero.
    x[0] = 0.5
    x.requires_grad_(True)
    labels = torch.tensor([0, 1, 2])

    loss = F.cross_entropy(model(x), labels)
    (gradient,) = torch.autograd.grad(loss, x)

    assert gradient.shape == x.shape
    assert torch.isfinite(gradient).all()
    assert gradient[1:].abs().sum() > 0


@pytest.mark.parametrize("operator", ["baseline", "tanhconv"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_parameter_gets_gradient(arch, operator):
    model = make_model(arch, operator).train()
    loss = F.cross_entropy(model(make_images()), torch.tensor([0, 1, 2]))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("operator", ["baseline", "tanhconv"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_state_dict_round_trip(arch, operator):
    model = make_model(arch, operator, seed=0)
    # Training-mode passes move BatchNorm and operator running statistics off their
    # initial values, so that the round trip has to carry them.
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(make_images(seed=seed))
    model.eval()

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = make_model(arch, operator, seed=1).eval()
    x = make_images(seed=7)
    with torch.no_grad():
        assert not torch.allclose(restored(x), model(x))
        restored.load_state_dict(state)
        assert torch.equal(restored(x), model(x))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_decoupled_keeps_baseline_keys(arch):
    baseline_keys = set(make_model(arch, "baseline").state_dict())
    decoupled_keys = set(make_model(arch, "tanhconv").state_dict())
    assert baseline_keys <= decoupled_keys


def test_keys_independent_of_stats():
    first = make_model("cnn9", "tanhconv").state_dict()
    second = make_model("cnn9", "tanhconv", mean=(0.1, 0.2, 0.3), std=0.2).state_dict()
    assert list(first) == list(second)


# Helpers


def test_count_parameters():
    model = make_model("cnn9", "baseline")
    expected = sum(parameter.numel() for parameter in model.parameters())
    assert count_parameters(model) == expected
    model.classifier.requires_grad_(False)
    frozen = sum(parameter.numel() for parameter in model.classifier.parameters())
    assert count_parameters(model, trainable_only=True) == expected - frozen


def test_count_parameters_at_full_width():
    model = build_model("cnn9", "baseline")
    # Nine 3x3 convs without bias, nine BatchNorms (2 values per channel), classifier.
    conv_weights = 9 * (3 * 64 + 2 * 64 * 64 + 64 * 128 + 2 * 128 * 128 + 128 * 256 + 2 * 256 * 256)
    norm_values = 2 * 3 * (64 + 128 + 256)
    classifier = 256 * 10 + 10
    assert count_parameters(model) == conv_weights + norm_values + classifier


def test_classes_can_be_built_directly():
    model = CNN9(ConvFactory("logconv"), num_classes=3, in_channels=1, width=0.125)
    assert model(make_images("mnist")).shape == (BATCH_SIZE, 3)
    mnist_model = MNIST2D(ConvFactory("baseline"), width=0.25)
    assert mnist_model.features(make_images("mnist")).shape == (BATCH_SIZE, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_on_gpu_matches_cpu(arch):
    model = make_model(arch, "tanhconv").eval()
    x = make_images()
    with torch.no_grad():
        expected = model(x)
        logits = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(logits, expected, rtol=1e-3, atol=1e-4)
