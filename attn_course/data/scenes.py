"""Scenes of real handwritten digits, with captions and boxes, for image captioning (chapter 13).

A scene is a square canvas holding 2 to 4 handwritten digits in a row ("seven left of two left of five")
or in a column ("five above seven above zero"). The digits come from ``sklearn.datasets.load_digits``
(1,797 real 8x8 images from the UCI optdigits set, shipped inside scikit-learn: nothing is downloaded).
Richer sources plug into the same composer: MNIST's idx files (downloaded only when asked) or any ``.npz``
of images and labels (``load_mnist``, ``load_npz``, ``load_digit_source``).

How a scene is composed (``compose_scenes``), so that the caption is never ambiguous:

- **row** ("left of"): the digits' patches are disjoint along x, at least ``min_gap`` pixels apart, read left
  to right; their y positions differ by at most ``jitter`` < ``digit_size``, so every pair of patches
  overlaps along y and no digit is "above" another;
- **column** ("above"): the same with x and y swapped, read top to bottom (the patches overlap along x,
  though a narrow "1" may then sit beside its neighbour's ink rather than under it);
- each digit's **box** is the bounding box of its ink (pixels > 0), in canvas pixels ``(x0, y0, x1, y1)``
  with exclusive ends, listed in caption order;
- train and test scenes are composed from disjoint sets of source images (``split_source``), so the test
  digit images are never seen in training (load_digits does not say who wrote which digit, so this
  guarantees unseen images, not unseen writers); the digits are dealt from shuffled decks of the source,
  so each is used equally often; everything is drawn from a seeded NumPy generator.

With the default ``min_gap`` (5) one cell of a 6-pixel grid never touches two boxes (a cell of ``c`` pixels
straddles two boxes only if they are at most ``c - 2`` pixels apart), which makes "the cell lies on the
digit" well defined for the attention hit rate (``attn_course.captioning.attention_hit_rate``).

Shape letters used here: N scenes, K digits per scene (padded to the most), T caption tokens, S canvas size.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import struct
from dataclasses import dataclass, fields

import numpy as np
import torch

from .. import _checks
from . import download as fetch

__all__ = [
    "DIGIT_WORDS", "LAYOUTS", "MNIST_FILES", "MNIST_URL", "VOCAB", "DigitSource", "SceneConfig", "Scenes",
    "Vocabulary", "compose_scenes", "load_digit_source", "load_mnist", "load_npz", "load_sklearn_digits",
    "make_datasets", "place_digits", "read_idx", "split_source",
]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LAYOUTS = ("row", "column")
RELATION_WORDS = {"row": ("left", "of"), "column": ("above",)}
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


class Vocabulary:
    """Words <-> token ids. The first three tokens are ``<pad>`` (0), ``<bos>`` (1) and ``<eos>`` (2)."""

    def __init__(self, words):
        words = list(words)
        if words[:3] != [PAD, BOS, EOS]:
            raise ValueError(f"a vocabulary starts with {PAD}, {BOS}, {EOS}; got {words[:3]}")
        if len(set(words)) != len(words):
            raise ValueError("the words of a vocabulary must be distinct")
        self.words = tuple(words)
        self.index = {w: i for i, w in enumerate(words)}
        self.pad, self.bos, self.eos = 0, 1, 2

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens: {' '.join(self.words)})"

    def encode(self, caption: str | list[str], length: int | None = None) -> list[int]:
        """``<bos>`` + the caption's words + ``<eos>``, padded with ``<pad>`` to ``length`` if given.

        caption: a string ("seven left of two") or a list of its words."""
        if isinstance(caption, str):
            words = caption.split()
        elif isinstance(caption, (list, tuple)):
            words = list(caption)
            odd = next((w for w in words if not isinstance(w, str)), None)
            if odd is not None:
                raise TypeError(f"expected a caption string or a list of words (str), got a list holding "
                                f"{type(odd).__name__} {odd!r}")
        else:
            raise TypeError(f"expected a caption string or a list of words, got {type(caption).__name__}")
        unknown = [w for w in words if w not in self.index or w in (PAD, BOS, EOS)]
        if unknown:
            known = " ".join(self.words[3:])
            raise ValueError(f"the caption {' '.join(map(str, words))!r} has the unknown word "
                             f"{unknown[0]!r}; the vocabulary is: {known}")
        ids = [self.bos, *(self.index[w] for w in words), self.eos]
        if length is not None:
            if len(ids) > length:
                raise ValueError(f"the caption needs {len(ids)} tokens with <bos> and <eos>, "
                                 f"more than length={length}")
            ids += [self.pad] * (length - len(ids))
        return ids

    def decode(self, ids) -> str:
        """Token ids -> a caption: skips ``<bos>`` and ``<pad>``, stops at the first ``<eos>``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        words = []
        for i in ids:
            if not isinstance(i, (int, np.integer)) or not 0 <= i < len(self):
                raise ValueError(f"token ids must be whole numbers in [0, {len(self)}), got {i!r}")
            if i == self.eos:
                break
            if i not in (self.pad, self.bos):
                words.append(self.words[i])
        return " ".join(words)


VOCAB = Vocabulary([PAD, BOS, EOS, *DIGIT_WORDS, "left", "of", "above"])
"""The captioning vocabulary: 3 special tokens, 10 digit words and 3 relation words (16 tokens)."""


# --- digit sources -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DigitSource:
    """Images of single digits: ``images`` (M, h, w) float32 in [0, 1], ``labels`` (M,) int64 in 0-9;
    ``ids`` (M,) int64 number each image in the full source (default 0..M-1), and survive ``subset``."""

    images: np.ndarray
    labels: np.ndarray
    name: str = "digits"
    ids: np.ndarray | None = None

    def __post_init__(self):
        images, labels = np.asarray(self.images), np.asarray(self.labels)
        if images.ndim != 3 or images.shape[0] == 0:
            raise ValueError(f"{self.name}: images must have shape (M, h, w) with M > 0, got {images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{self.name}: one label per image is needed: images {images.shape}, "
                             f"labels {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"{self.name}: labels must be whole numbers 0-9, got {labels.dtype} from "
                             f"{labels.min()} to {labels.max()}")
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ValueError(f"{self.name}: images must be finite and scaled to [0, 1], got values from "
                             f"{images.min()} to {images.max()}")
        ids = np.arange(len(labels)) if self.ids is None else np.asarray(self.ids)
        if ids.shape != labels.shape:
            raise ValueError(f"{self.name}: one id per image is needed: images {images.shape}, "
                             f"ids {ids.shape}")
        object.__setattr__(self, "images", images.astype(np.float32))
        object.__setattr__(self, "labels", labels.astype(np.int64))
        object.__setattr__(self, "ids", ids.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        """The side of the (square) digit images."""
        return self.images.shape[1]

    def subset(self, index, name: str | None = None) -> DigitSource:
        return DigitSource(self.images[index], self.labels[index], name or self.name, self.ids[index])


def load_sklearn_digits() -> DigitSource:
    """The 1,797 handwritten 8x8 digits inside scikit-learn (UCI optdigits; Alpaydin & Kaynak 1998),
    scaled from 0-16 to [0, 1]. Ships with the scikit-learn wheel: no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return DigitSource(digits.images / 16.0, digits.target, "sklearn load_digits")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an array in the idx format of MNIST (LeCun et al. 1998), gzipped (``.gz``) or not.

    The header is two zero bytes, a type code (0x08 = unsigned bytes) and the number of dimensions,
    then one big-endian 32-bit size per dimension; the data follow in C order.
    """
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read the idx file {str(path)!r}: {err}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{str(path)!r} is not an idx file of unsigned bytes (it should start with the "
                         f"bytes 00 00 08, got {raw[:3].hex(' ') or 'nothing'})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{str(path)!r} is truncated: its header promises {ndim} dimensions")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{str(path)!r} is truncated or padded: its header says shape {shape} "
                         f"({int(np.prod(shape))} values), the file holds {data.size}")
    return data.reshape(shape)


MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _shrink(images: np.ndarray, size: int, border: int) -> np.ndarray:
    """Cut ``border`` pixels off every side, then average-pool to ``size`` x ``size`` (area resampling)."""
    if border:
        images = images[:, border:-border, border:-border]
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="area").squeeze(1)
    return (x / x.amax(dim=(1, 2), keepdim=True).clamp_min(1e-8)).numpy()


def load_mnist(root: str | os.PathLike, split: str = "train", download: bool = False, size: int | None = 8,
               limit: int | None = None) -> DigitSource:
    """MNIST digits (LeCun et al. 1998) from the four idx files in ``root`` (``.gz`` or unpacked).

    download: fetch the missing files from ``MNIST_URL`` into ``root`` first (only then is anything
    downloaded; files already there are reused). size: shrink the 28x28 images to ``size`` x ``size`` (the
    4-pixel empty border is cut first, then area resampling, each image rescaled to a peak of 1), so
    scenes keep the canvas and model of the load_digits default; None keeps 28x28. limit: the first
    ``limit`` images only.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {', '.join(MNIST_FILES)}, got {split!r}")
    root = pathlib.Path(root)
    paths = []
    for name in MNIST_FILES[split]:
        candidates = [root / name, root / name.removesuffix(".gz")]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None and download:
            found = fetch(MNIST_URL + name, root / name)
        if found is None:
            raise FileNotFoundError(f"MNIST file {name} (or its unpacked form) is not in {str(root)!r}; "
                                    f"pass download=True to fetch it from {MNIST_URL}")
        paths.append(found)
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"MNIST images and labels do not match: shapes {images.shape} and {labels.shape}")
    if limit is not None:
        _checks.positive("limit", limit, integer=True)
        images, labels = images[:limit], labels[:limit]
    images = images.astype(np.float32) / 255.0
    if size is not None:
        _checks.positive("size", size, integer=True)
        images = _shrink(images, size, border=4 if images.shape[1] == 28 else 0)
    return DigitSource(images, labels.astype(np.int64), f"MNIST {split}")


def load_npz(path: str | os.PathLike, images_key: str = "images", labels_key: str = "labels",
             size: int | None = None) -> DigitSource:
    """Digits from a NumPy ``.npz`` holding ``images`` (M, h, w) and ``labels`` (M,) (or the keys given).

    Images in 0-255 (any integer dtype, or floats above 1) are scaled to [0, 1]; ``size`` resamples them
    to ``size`` x ``size`` by area (no border cut).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .npz file: {str(path)!r}")
    with np.load(path) as archive:
        missing = [k for k in (images_key, labels_key) if k not in archive.files]
        if missing:
            raise ValueError(f"{str(path)!r} has no array named {missing[0]!r}; it holds {archive.files}")
        images, labels = archive[images_key], archive[labels_key]
    images = images.astype(np.float32)
    if images.max(initial=0) > 1:
        images = images / 255.0
    if size is not None:
        _checks.positive("size", size, integer=True)
        images = _shrink(images, size, border=0)
    return DigitSource(images, labels.astype(np.int64), path.name)


def load_digit_source(source="sklearn", **kwargs) -> DigitSource:
    """One way in for every source: ``"sklearn"`` (the default, offline), ``"mnist"`` (``root=`` the idx
    folder; ``download=True`` to fetch it), a path to an ``.npz``, a ``DigitSource``, or a pair
    ``(images, labels)`` of arrays."""
    if isinstance(source, DigitSource):
        return source
    if isinstance(source, tuple) and len(source) == 2:
        return DigitSource(np.asarray(source[0]), np.asarray(source[1]), "arrays")
    if source == "sklearn":
        return load_sklearn_digits()
    if source == "mnist":
        return load_mnist(**kwargs)
    if isinstance(source, (str, os.PathLike)) and str(source).endswith(".npz"):
        return load_npz(source, **kwargs)
    raise ValueError(f"source must be 'sklearn', 'mnist', a path to an .npz file, a DigitSource or a pair "
                     f"(images, labels), got {source!r}")


def split_source(source: DigitSource, test_fraction: float = 0.2,
                 seed: int = 0) -> tuple[DigitSource, DigitSource]:
    """Split the source images (not the scenes) into train and test pools, stratified by label.

    Every test scene is composed from the test pool only, so its digit images are never seen in training.
    """
    _checks.number("test_fraction", test_fraction, minimum=0)
    if test_fraction >= 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(source.labels):
        members = np.flatnonzero(source.labels == label)
        take = max(1, round(test_fraction * len(members))) if len(members) > 1 else 0
        test.extend(rng.permutation(members)[:take].tolist())
    is_test = np.zeros(len(source), dtype=bool)
    is_test[test] = True
    if is_test.all() or not is_test.any():
        raise ValueError(f"the source has too few images ({len(source)}) to split into train and test")
    return (source.subset(np.flatnonzero(~is_test), f"{source.name} (train)"),
            source.subset(np.flatnonzero(is_test), f"{source.name} (test)"))


# --- scenes ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SceneConfig:
    """How scenes are laid out. canvas: side S in pixels; digit_size: side of a digit image; 2 <=
    min_digits <= max_digits digits per scene; min_gap: empty pixels between neighbouring digits' patches;
    jitter: how far (pixels) the digits of one scene may shift across the reading direction (< digit_size,
    so a row never reads as a column)."""

    canvas: int = 48
    digit_size: int = 8
    min_digits: int = 2
    max_digits: int = 4
    min_gap: int = 5
    jitter: int = 4

    def __post_init__(self):
        for f in fields(self):
            _checks.number(f.name, getattr(self, f.name), integer=True, minimum=0, strict=False)
        if not 2 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 2 <= min_digits <= max_digits, got {self.min_digits} and "
                             f"{self.max_digits}")
        if self.digit_size < 1 or self.jitter >= self.digit_size:
            raise ValueError(f"jitter must be smaller than digit_size (or a row could read as a column), got "
                             f"jitter={self.jitter}, digit_size={self.digit_size}")
        need = self.max_digits * self.digit_size + (self.max_digits - 1) * self.min_gap
        if need > self.canvas or self.digit_size + self.jitter > self.canvas:
            raise ValueError(f"{self.max_digits} digits of {self.digit_size} px with gaps of {self.min_gap} "
                             f"px "
                             f"need a canvas of {need} px, got canvas={self.canvas}")

    @property
    def max_tokens(self) -> int:
        """Tokens of the longest caption with <bos> and <eos>: a row of max_digits digits."""
        return self.max_digits + 2 * (self.max_digits - 1) + 2


@dataclass(frozen=True)
class Scenes:
    """A batch of composed scenes (index or slice it to get fewer).

    images: (N, 1, S, S) float32 in [0, 1]; tokens: (N, T) long, ``<bos>`` caption ``<eos>`` ``<pad>``...;
    labels: (N, K) long, the digits in caption order (-1 pads); boxes: (N, K, 4) long, each digit's ink box
    ``(x0, y0, x1, y1)`` in pixels, ends exclusive (-1 pads); named: (N, T - 1) long, for each predicted
    token (``tokens[:, 1:]``) the index k of the digit it names, or -1 (relation words, ``<eos>``, padding);
    sources: (N, K) long, the ids of the source images used (-1 pads); layouts: (N,) long, 0 = row,
    1 = column;
    captions: the N captions as strings.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    named: torch.Tensor
    sources: torch.Tensor
    layouts: torch.Tensor
    captions: tuple[str, ...]

    def __len__(self) -> int:
        return self.images.size(0)

    def __getitem__(self, index) -> Scenes:
        """``scenes[i]`` (a Scenes of one), a slice, or a sequence/tensor of indices."""
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"scene index {int(index)} is out of range for {n} scenes")
            index = int(index) % n
            index = slice(index, index + 1)
        picked = {f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "captions"}
        rows = range(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index).tolist()
        return Scenes(**picked, captions=tuple(self.captions[i] for i in rows))

    @property
    def n_digits(self) -> torch.Tensor:
        """(N,) the number of digits in each scene."""
        return (self.labels >= 0).sum(dim=1)

    def to(self, device) -> Scenes:
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if f.name != "captions"}
        return Scenes(**moved, captions=self.captions)


def _ink_boxes(images: np.ndarray) -> np.ndarray:
    """(M, h, w) -> (M, 4) ``(x0, y0, x1, y1)`` of the pixels > 0 (the whole image if it is blank)."""
    ink = images > 0
    cols, rows = ink.any(axis=1), ink.any(axis=2)
    size = images.shape[1]
    boxes = np.zeros((len(images), 4), dtype=np.int64)
    for i, (c, r) in enumerate(zip(cols, rows)):
        xs, ys = np.flatnonzero(c), np.flatnonzero(r)
        boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1) if len(xs) else (0, 0, size, size)
    return boxes


def compose_scenes(source: DigitSource, n: int, config: SceneConfig | None = None, seed: int = 0,
                   vocab: Vocabulary = VOCAB) -> Scenes:
    """Compose ``n`` scenes from the digits of ``source`` (see the module docstring for the layout rules).

    Deterministic: the same source, n, config and seed give the same scenes.
    """
    config = config or SceneConfig()
    if not isinstance(source, DigitSource):
        raise TypeError(f"source must be a DigitSource (see load_digit_source), got {type(source).__name__}")
    _checks.positive("n", n, integer=True)
    d, s, k_max = config.digit_size, config.canvas, config.max_digits
    if source.images.shape[1:] != (d, d):
        raise ValueError(f"the config places {d}x{d} digits but {source.name} has images of "
                         f"{source.images.shape[1]}x{source.images.shape[2]}; resize them (e.g. "
                         f"load_mnist(size={d})) or set SceneConfig(digit_size=...)")
    rng = np.random.default_rng(seed)
    ink = _ink_boxes(source.images)
    length = config.max_tokens
    images = np.zeros((n, 1, s, s), dtype=np.float32)
    tokens = np.full((n, length), vocab.pad, dtype=np.int64)
    named = np.full((n, length - 1), -1, dtype=np.int64)
    labels = np.full((n, k_max), -1, dtype=np.int64)
    sources = np.full((n, k_max), -1, dtype=np.int64)
    boxes = np.full((n, k_max, 4), -1, dtype=np.int64)
    layouts = rng.integers(0, len(LAYOUTS), size=n)
    counts = rng.integers(config.min_digits, k_max + 1, size=n)
    # the digits are dealt from shuffled decks of the whole source, so each is used equally often
    decks = -(-int(counts.sum()) // len(source))
    deal = np.concatenate([rng.permutation(len(source)) for _ in range(decks)])
    starts = np.concatenate([[0], np.cumsum(counts)])
    captions = []
    for i in range(n):
        k = counts[i]
        picks = deal[starts[i]:starts[i] + k]
        free = s - k * d - (k - 1) * config.min_gap
        along = np.arange(k) * (d + config.min_gap) + np.sort(rng.integers(0, free + 1, size=k))
        across = rng.integers(0, s - d - config.jitter + 1) + rng.integers(0, config.jitter + 1, size=k)
        xs, ys = (along, across) if layouts[i] == 0 else (across, along)
        words = []
        for j, (src, x, y) in enumerate(zip(picks, xs, ys)):
            images[i, 0, y:y + d, x:x + d] = source.images[src]
            boxes[i, j] = ink[src] + (x, y, x, y)
            labels[i, j], sources[i, j] = source.labels[src], source.ids[src]
            if j:
                words.extend(RELATION_WORDS[LAYOUTS[layouts[i]]])
            named[i, len(words)] = j  # predicted token t names digit j: tokens[t + 1] is its word
            words.append(DIGIT_WORDS[source.labels[src]])
        captions.append(" ".join(words))
        tokens[i] = vocab.encode(words, length)
    as_tensor = torch.from_numpy
    return Scenes(as_tensor(images), as_tensor(tokens), as_tensor(labels), as_tensor(boxes), as_tensor(named),
                  as_tensor(sources), as_tensor(layouts), tuple(captions))


def place_digits(images: torch.Tensor, size: int, generator: torch.Generator | None = None):
    """Paste each digit at a random place on its own blank ``size`` x ``size`` canvas (for pretraining an
    encoder on single digits). images: (M, d, d) -> canvases (M, 1, size, size) and the pasted patches'
    boxes (M, 4) ``(x0, y0, x1, y1)``, ends exclusive."""
    _checks.tensor("images", images, ndim=3)
    _checks.positive("size", size, integer=True)
    m, d = images.size(0), images.size(1)
    if images.size(2) != d or d > size:
        raise ValueError(f"images must be square digits no larger than size={size}, "
                         f"got {tuple(images.shape)}")
    canvases = images.new_zeros(m, 1, size, size)
    corner = torch.randint(0, size - d + 1, (m, 2), generator=generator)
    for i, (x, y) in enumerate(corner.tolist()):
        canvases[i, 0, y:y + d, x:x + d] = images[i]
    return canvases, torch.cat([corner, corner + d], dim=1)


def make_datasets(source="sklearn", n_train: int = 20000, n_test: int = 1000,
                  config: SceneConfig | None = None,
                  test_fraction: float = 0.2, seed: int = 0, **source_kwargs) -> tuple[Scenes, Scenes]:
    """Train and test scenes from one digit source, split by source image (``split_source``).

    The train scenes use seed ``seed``, the test scenes ``seed + 1``; both are deterministic.
    """
    digits = load_digit_source(source, **source_kwargs)
    train_pool, test_pool = split_source(digits, test_fraction, seed)
    return (compose_scenes(train_pool, n_train, config, seed),
            compose_scenes(test_pool, n_test, config, seed + 1))
