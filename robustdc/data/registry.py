"""Dataset descriptions: class count, image shape and normalization constants.

``mean`` and ``std`` are per channel in [0, 1] pixel units, computed over every pixel
of the training set. Models normalize with them internally, so the data layer never
normalizes.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of one dataset.

    Attributes:
        name: registry name, e.g. ``"cifar10"``.
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        in_channels: 1 for greyscale, 3 for RGB.
        image_size: height and width in pixels (all images are square).
        mean: per-channel training-set mean in [0, 1] pixel units.
        std: per-channel training-set standard deviation in [0, 1] pixel units.
        class_names: one name per label, in label order.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


_DIGITS = tuple(str(digit) for digit in range(10))

# Measured on the 60,000 training images of the official MNIST files: the mean and
# standard deviation over all pixels of the images divided by 255.
_MNIST_MEAN = (0.1307,)
_MNIST_STD = (0.3081,)

_FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# Fine-label names in label order, which is alphabetical.
# NOTE: taken from common usage, not read from a CIFAR-100 ``meta`` file.
_CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can",
    "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud",
    "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
    "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo",
    "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree",
    "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray",
    "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower",
    "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)  # fmt: skip

DATASETS: dict[str, DatasetInfo] = {
    # The embedded sample is a subset of MNIST and uses the full MNIST constants, so
    # that a model trained on the sample normalizes exactly like one trained on MNIST.
    "mnist-sample": DatasetInfo(
        name="mnist-sample",
        num_classes=10,
        in_channels=1,
        image_size=28,
        mean=_MNIST_MEAN,
        std=_MNIST_STD,
        class_names=_DIGITS,
    ),
    "mnist": DatasetInfo(
        name="mnist",
        num_classes=10,
        in_channels=1,
        image_size=28,
        mean=_MNIST_MEAN,
        std=_MNIST_STD,
        class_names=_DIGITS,
    ),
    # Measured like MNIST, on the 60,000 official Fashion-MNIST training images
    # (float64 mean 0.28604, standard deviation 0.35302).
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        num_classes=10,
        in_channels=1,
        image_size=28,
        mean=(0.2860,),
        std=(0.3530,),
        class_names=_FASHION_MNIST_CLASSES,
    ),
    # The usual constants of the full 50,000-image training set (channel means
    # 125.31, 122.95 and 113.87 on the 0-255 scale). Training batches 1 and 2 alone
    # give means (0.4928, 0.4830, 0.4470) and standard deviations
    # (0.2474, 0.2441, 0.2621).
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        in_channels=3,
        image_size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        class_names=_CIFAR10_CLASSES,
    ),
    # NOTE: commonly published CIFAR-100 training-set constants, not checked against
    # the data by this project. Published copies differ in the fourth decimal.
    "cifar100": DatasetInfo(
        name="cifar100",
        num_classes=100,
        in_channels=3,
        image_size=32,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        class_names=_CIFAR100_CLASSES,
    ),
}

DEFAULT_DATASET = "mnist-sample"


def _did_you_mean(value: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(value, allowed, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def get_info(name: str) -> DatasetInfo:
    """Return the description of dataset ``name``.

    Raises:
        ValueError: ``name`` is not a registered dataset. The message lists the
            registered names and suggests the closest one.
    """
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        allowed = list(DATASETS)
        raise ValueError(
            f"unknown dataset {name!r}; expected one of: {', '.join(allowed)}"
            + _did_you_mean(str(name), allowed)
        ) from None


def check_split(split: str) -> str:
    """Return ``split`` unchanged, or raise ValueError if it is not a known split."""
    if split not in SPLITS:
        raise ValueError(
            f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}"
            + _did_you_mean(str(split), list(SPLITS))
        )
    return split
