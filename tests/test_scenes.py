"""Scenes of handwritten digits: captions, boxes and pixels agree; the split is by source image; the
loaders read real formats (MNIST idx, .npz) from small files written here; bad input gets a clear error."""

import gzip
import re
import struct
import urllib.request

import numpy as np
import pytest
import torch

from attn_course.data import scenes as sc
from attn_course.data.scenes import (
    DIGIT_WORDS,
    VOCAB,
    DigitSource,
    SceneConfig,
    compose_scenes,
    load_digit_source,
    load_mnist,
    load_npz,
    load_sklearn_digits,
    make_datasets,
    place_digits,
    read_idx,
    split_source,
)

pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # the module's fixtures included


@pytest.fixture(scope="module")
def digits():
    return load_sklearn_digits()


@pytest.fixture(scope="module")
def scenes(digits):
    return compose_scenes(digits, 300, seed=0)


# --- the vocabulary ------------------------------------------------------------------------------------

def test_vocabulary_round_trip():
    assert len(VOCAB) == 16 and VOCAB.words[:3] == ("<pad>", "<bos>", "<eos>")
    ids = VOCAB.encode("seven left of two", length=8)
    assert ids[0] == VOCAB.bos and ids[5] == VOCAB.eos and ids[6:] == [VOCAB.pad] * 2
    assert VOCAB.decode(ids) == "seven left of two"
    assert VOCAB.decode(torch.tensor(ids)) == "seven left of two"
    assert VOCAB.decode([VOCAB.bos, VOCAB.index["one"], VOCAB.eos, VOCAB.index["two"]]) == "one"


def test_unknown_word_names_the_word_and_the_vocabulary():
    with pytest.raises(ValueError, match=r"unknown word 'right'; the vocabulary is: zero one .* above"):
        VOCAB.encode("seven right of two")
    with pytest.raises(ValueError, match="unknown word '<eos>'"):
        VOCAB.encode(["one", "<eos>"])


@pytest.mark.parametrize(("call", "message"), [
    (lambda: VOCAB.encode("one above two above three", length=4), "needs 7 tokens with <bos> and <eos>"),
    (lambda: VOCAB.decode([1, 99]), r"token ids must be whole numbers in \[0, 16\), got 99"),
    (lambda: VOCAB.decode([0.5]), "got 0.5"),
    (lambda: sc.Vocabulary(["a", "b", "c"]), "a vocabulary starts with <pad>, <bos>, <eos>"),
    (lambda: sc.Vocabulary(["<pad>", "<bos>", "<eos>", "a", "a"]), "must be distinct"),
])
def test_vocabulary_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(("caption", "message"), [
    (7, "expected a caption string or a list of words, got int"),
    (None, "expected a caption string or a list of words, got NoneType"),
    (["one", 7], "expected a caption string or a list of words .*, got a list holding int 7"),
])
def test_a_caption_that_is_not_text_is_refused(caption, message):
    with pytest.raises(TypeError, match=message):
        VOCAB.encode(caption)
    assert VOCAB.encode(("one", "above", "two")) == VOCAB.encode("one above two")


# --- scenes: captions, boxes and pixels agree ----------------------------------------------------------

def test_shapes_and_types(scenes):
    n, cfg = 300, SceneConfig()
    assert scenes.images.shape == (n, 1, 48, 48) and scenes.images.dtype == torch.float32
    assert scenes.tokens.shape == (n, cfg.max_tokens) == (n, 12)
    assert scenes.labels.shape == scenes.sources.shape == (n, 4) and scenes.boxes.shape == (n, 4, 4)
    assert scenes.named.shape == (n, 11) and scenes.layouts.shape == (n,) and len(scenes.captions) == n
    assert set(scenes.n_digits.tolist()) == {2, 3, 4}
    assert set(scenes.layouts.tolist()) == {0, 1}
    assert 0 <= float(scenes.images.min()) and float(scenes.images.max()) <= 1


def test_captions_name_the_digits_in_reading_order(scenes):
    for i in range(len(scenes)):
        k = int(scenes.n_digits[i])
        words = scenes.captions[i].split()
        relation = ["left", "of"] if scenes.layouts[i] == 0 else ["above"]
        expected = [DIGIT_WORDS[scenes.labels[i, 0]]]
        for j in range(1, k):
            expected += relation + [DIGIT_WORDS[scenes.labels[i, j]]]
        assert words == expected
        assert VOCAB.decode(scenes.tokens[i]) == scenes.captions[i]
        # named[t] is the digit that predicted token t (tokens[t + 1]) names
        for t, k_named in enumerate(scenes.named[i].tolist()):
            word = VOCAB.words[scenes.tokens[i, t + 1]]
            if k_named >= 0:
                assert word == DIGIT_WORDS[scenes.labels[i, k_named]]
            else:
                assert word not in DIGIT_WORDS
        assert sorted(k for k in scenes.named[i].tolist() if k >= 0) == list(range(k))


def test_boxes_are_tight_ink_boxes_and_pixels_come_from_the_sources(scenes, digits):
    for i in range(0, len(scenes), 7):
        image = scenes.images[i, 0].numpy()
        covered = np.zeros_like(image, dtype=bool)
        for j in range(int(scenes.n_digits[i])):
            x0, y0, x1, y1 = scenes.boxes[i, j].tolist()
            source = digits.images[scenes.sources[i, j]]
            assert digits.labels[scenes.sources[i, j]] == scenes.labels[i, j]
            ink = image[y0:y1, x0:x1] > 0
            assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any()  # tight
            # the box's pixels are the source digit's ink box, copied exactly
            rows, cols = np.flatnonzero((source > 0).any(1)), np.flatnonzero((source > 0).any(0))
            np.testing.assert_array_equal(image[y0:y1, x0:x1],
                                          source[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
            covered[y0:y1, x0:x1] = True
        assert not image[~covered].any()  # no ink outside the boxes


def test_order_is_unambiguous(scenes):
    cfg = SceneConfig()
    for i in range(len(scenes)):
        k = int(scenes.n_digits[i])
        boxes = scenes.boxes[i, :k]
        along, across = (0, 1) if scenes.layouts[i] == 0 else (1, 0)  # x for rows, y for columns
        for j in range(k - 1):
            # consecutive digits are apart along the reading direction, in order, by at least min_gap
            assert boxes[j + 1, along] - boxes[j, along + 2] >= cfg.min_gap
        for a in range(k):
            for b in range(a + 1, k):
                # across it they are (nearly) level: with these digits any gap there is narrower than min_gap;
                # in a row the 8-pixel-high digits always overlap vertically
                starts, ends = boxes[[a, b], across], boxes[[a, b], across + 2]
                gap = starts.max() - ends.min()
                assert gap < cfg.min_gap
                if scenes.layouts[i] == 0:
                    assert gap < 0


def test_no_grid_cell_touches_two_digits(scenes):
    cell = 6
    for i in range(len(scenes)):
        k = int(scenes.n_digits[i])
        touched = np.zeros((8, 8), dtype=int)
        for x0, y0, x1, y1 in scenes.boxes[i, :k].tolist():
            touched[y0 // cell:(y1 - 1) // cell + 1, x0 // cell:(x1 - 1) // cell + 1] += 1
        assert touched.max() == 1


def test_padding_after_the_last_digit(scenes):
    for i in range(len(scenes)):
        k = int(scenes.n_digits[i])
        assert (scenes.labels[i, k:] == -1).all() and (scenes.boxes[i, k:] == -1).all()
        assert (scenes.sources[i, k:] == -1).all() and (scenes.labels[i, :k] >= 0).all()


def test_deterministic(digits):
    a, b = compose_scenes(digits, 40, seed=3), compose_scenes(digits, 40, seed=3)
    c = compose_scenes(digits, 40, seed=4)
    assert torch.equal(a.images, b.images) and a.captions == b.captions and torch.equal(a.boxes, b.boxes)
    assert a.captions != c.captions


def test_every_source_digit_is_used_about_equally(digits):
    pool = digits.subset(np.arange(50))
    scenes = compose_scenes(pool, 200, seed=0)
    counts = np.bincount(scenes.sources[scenes.sources >= 0].numpy(), minlength=50)
    assert counts.max() - counts.min() <= 1


def test_indexing_and_slicing(scenes):
    one = scenes[5]
    assert len(one) == 1 and one.captions == (scenes.captions[5],)
    assert torch.equal(one.images[0], scenes.images[5])
    part = scenes[10:14]
    assert len(part) == 4 and part.captions == scenes.captions[10:14]
    picked = scenes[torch.tensor([3, 1])]
    assert picked.captions == (scenes.captions[3], scenes.captions[1])
    assert torch.equal(scenes[-1].tokens[0], scenes.tokens[-1])
    assert scenes[-300].captions == scenes[np.int64(0)].captions == (scenes.captions[0],)
    assert scenes.to("cpu").images.device.type == "cpu"
    few = scenes[:6]
    for index in (6, 10, -7):
        with pytest.raises(IndexError, match=f"scene index {index} is out of range for 6 scenes"):
            few[index]


def test_smaller_config(digits):
    cfg = SceneConfig(canvas=36, max_digits=3)
    scenes = compose_scenes(digits, 30, cfg, seed=1)
    assert scenes.images.shape == (30, 1, 36, 36) and scenes.tokens.shape[1] == cfg.max_tokens == 9
    assert int(scenes.n_digits.max()) <= 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"canvas": 40}, "4 digits of 8 px with gaps of 5 px need a canvas of 47 px, got canvas=40"),
    ({"jitter": 8}, "jitter must be smaller than digit_size"),
    ({"min_digits": 1}, "need 2 <= min_digits <= max_digits"),
    ({"min_digits": 4, "max_digits": 3}, "need 2 <= min_digits <= max_digits"),
    ({"min_gap": -1}, "min_gap must be >= 0"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SceneConfig(**kwargs)


def test_digits_of_the_wrong_size_are_refused():
    big = DigitSource(np.zeros((3, 28, 28)), np.array([1, 2, 3]), "MNIST")
    with pytest.raises(ValueError, match=r"places 8x8 digits but MNIST has images of 28x28; resize them"):
        compose_scenes(big, 5)
    with pytest.raises(TypeError, match="source must be a DigitSource"):
        compose_scenes(np.zeros((3, 8, 8)), 5)


# --- the split by source image -------------------------------------------------------------------------

def test_split_is_by_source_image_and_stratified(digits):
    train, test = split_source(digits, 0.2, seed=0)
    assert len(train) + len(test) == len(digits) == 1797
    assert not set(train.ids.tolist()) & set(test.ids.tolist())
    assert len(test) == pytest.approx(0.2 * 1797, abs=10)
    assert sorted(np.unique(test.labels).tolist()) == list(range(10))
    np.testing.assert_array_equal(test.images, digits.images[test.ids])
    again, _ = split_source(digits, 0.2, seed=0)
    np.testing.assert_array_equal(again.ids, train.ids)


def test_test_scenes_use_unseen_handwriting():
    train, test = make_datasets(n_train=200, n_test=100)
    train_ids = set(train.sources[train.sources >= 0].tolist())
    test_ids = set(test.sources[test.sources >= 0].tolist())
    assert train_ids and test_ids and not train_ids & test_ids


def test_split_errors(digits):
    with pytest.raises(ValueError, match="test_fraction must be between 0 and 1"):
        split_source(digits, 1.0)
    with pytest.raises(ValueError, match="too few images"):
        split_source(digits.subset([0]), 0.5)


# --- sources and loaders -------------------------------------------------------------------------------

def test_sklearn_digits_are_real_and_scaled(digits):
    assert digits.images.shape == (1797, 8, 8) and digits.images.dtype == np.float32
    assert digits.images.max() == 1.0 and digits.images.min() == 0.0
    assert np.bincount(digits.labels).min() >= 170


@pytest.mark.parametrize(("images", "labels", "message"), [
    (np.zeros((3, 8)), np.zeros(3, int), r"images must have shape \(M, h, w\)"),
    (np.zeros((3, 8, 8)), np.zeros(2, int), "one label per image"),
    (np.zeros((3, 8, 8)), np.array([0, 1, 10]), "labels must be whole numbers 0-9"),
    (np.zeros((3, 8, 8)), np.array([0.0, 1.0, 2.0]), "labels must be whole numbers 0-9"),
    (np.full((3, 8, 8), 2.0), np.zeros(3, int), r"scaled to \[0, 1\]"),
    (np.full((3, 8, 8), np.nan), np.zeros(3, int), "finite"),
])
def test_digit_source_errors(images, labels, message):
    with pytest.raises(ValueError, match=message):
        DigitSource(images, labels)


def _write_idx(path, array, gz=True):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(data)


def _fake_mnist(root, n=12, gz=True, split="train"):
    rng = np.random.default_rng(0)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 6:22, 8:20] = rng.integers(1, 256, size=(n, 16, 12))
    labels = np.arange(n) % 10
    names = sc.MNIST_FILES[split]
    suffix = "" if gz else ".gz"
    _write_idx(root / names[0].removesuffix(suffix), images, gz)
    _write_idx(root / names[1].removesuffix(suffix), labels, gz)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    _write_idx(path, array, gz)
    np.testing.assert_array_equal(read_idx(path), array)


def test_read_idx_errors(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="is not an idx file of unsigned bytes"):
        read_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">2I", 3, 3) + b"\x01\x02")
    with pytest.raises(ValueError, match=r"header says shape \(3, 3\) \(9 values\), the file holds 2"):
        read_idx(short)
    with pytest.raises(ValueError, match="cannot read the idx file"):
        read_idx(tmp_path / "missing.idx")


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_local_files(tmp_path, gz):
    images, labels = _fake_mnist(tmp_path, gz=gz)
    source = load_mnist(tmp_path, size=8)
    assert source.images.shape == (12, 8, 8) and source.name == "MNIST train"
    np.testing.assert_array_equal(source.labels, labels)
    assert source.images.max() == pytest.approx(1.0) and source.images.min() >= 0
    full = load_mnist(tmp_path, size=None, limit=5)
    np.testing.assert_allclose(full.images, images[:5] / 255.0, rtol=1e-6)
    scenes = compose_scenes(source, 6)  # the same composer and canvas as load_digits
    assert scenes.images.shape == (6, 1, 48, 48)


def test_load_mnist_without_files_says_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass download=True to fetch it from https://"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="split must be one of train, test"):
        load_mnist(tmp_path, split="valid")


def test_load_mnist_downloads_only_when_asked(tmp_path, monkeypatch):
    served = tmp_path / "server"
    served.mkdir()
    _fake_mnist(served, split="test")
    fetched = []
    real_urlopen = urllib.request.urlopen

    def fake_urlopen(request, timeout=None):  # stands in for the network: serves the files written above
        url = request.full_url
        fetched.append(url)
        return real_urlopen((served / url.rsplit("/", 1)[-1]).as_uri(), timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "cache"
    source = load_mnist(root, split="test", download=True)
    assert len(source) == 12 and len(fetched) == 2
    assert all(u.startswith(sc.MNIST_URL) for u in fetched)
    assert sorted(p.name for p in root.iterdir()) == sorted(sc.MNIST_FILES["test"])  # no partial files left
    load_mnist(root, split="test", download=True)
    assert len(fetched) == 2  # cached: nothing fetched again


def test_a_failed_mnist_download_is_named_and_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sc, "MNIST_URL", (tmp_path / "nowhere").as_uri() + "/")
    root = tmp_path / "cache"
    with pytest.raises(OSError, match="could not download file://.*nowhere/t10k-images-idx3-ubyte.gz"):
        load_mnist(root, split="test", download=True)
    assert list(root.iterdir()) == []


def test_load_npz(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "digits.npz"
    np.savez(path, images=rng.integers(0, 256, size=(5, 16, 16)), labels=np.arange(5))
    source = load_npz(path, size=8)
    assert source.images.shape == (5, 8, 8) and source.images.max() <= 1.0
    np.testing.assert_array_equal(source.labels, np.arange(5))
    assert load_digit_source(path).images.shape == (5, 16, 16)
    np.savez(tmp_path / "other.npz", x=np.zeros((2, 8, 8)), y=np.zeros(2, int))
    assert len(load_npz(tmp_path / "other.npz", images_key="x", labels_key="y")) == 2
    with pytest.raises(ValueError, match=r"has no array named 'images'; it holds \['x', 'y'\]"):
        load_npz(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="no such .npz file"):
        load_npz(tmp_path / "nope.npz")


def test_load_digit_source_dispatch(digits):
    assert load_digit_source(digits) is digits
    pair = load_digit_source((np.zeros((2, 8, 8)), np.array([1, 2])))
    assert pair.name == "arrays" and len(pair) == 2
    with pytest.raises(ValueError, match="source must be 'sklearn', 'mnist', a path to an .npz file"):
        load_digit_source("emnist")


def test_place_digits():
    images = torch.rand(6, 8, 8)
    canvases, boxes = place_digits(images, 18, torch.Generator().manual_seed(0))
    assert canvases.shape == (6, 1, 18, 18) and boxes.shape == (6, 4)
    for canvas, image, (x0, y0, x1, y1) in zip(canvases, images, boxes.tolist()):
        assert x1 - x0 == y1 - y0 == 8
        assert torch.equal(canvas[0, y0:y1, x0:x1], image)
        assert float(canvas.sum()) == pytest.approx(float(image.sum()))
    with pytest.raises(ValueError, match="no larger than size=6"):
        place_digits(images, 6)
