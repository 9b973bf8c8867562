"""``tf.data`` input pipelines over the registered data sets."""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

from .arrays import check_split, load_arrays
from .errors import DataError
from .registry import get_spec

BINARIZE_MODES = (None, "static", "dynamic", "none")


def load(name: str, split="train", data_dir=None, batch_size: int | tuple[int, ...] = 100,
         binarize: str | None = None, shuffle: bool | None = None, seed: int = 0,
         labels: bool = False, max_examples: int | None = None, download: bool = True,
         drop_remainder: bool = False, verify: bool = False, train_split: str | None = None,
         stream_from: int | None = None):
    """Batched ``tf.data.Dataset`` of a split, or a tuple of them for a tuple of splits.

    Elements are images ``float32 [B, H, W, C]``, or ``(images, one_hot)`` with
    ``one_hot`` float32 ``[B, num_classes]`` when ``labels``.

    - ``batch_size``: examples per batch; for a tuple of splits, one size for all or a
      tuple of sizes, one per split (e.g. a larger batch for the validation split).
    - ``split``: a split name or a slice of one in file order, taken before any
      shuffling or subsampling: ``"test[:8000]"``, ``"test[8000:]"`` (negative
      and open bounds as in Python).
    - ``train_split``: which of the requested splits is training data (shuffled
      when ``shuffle`` is None; binarized afresh per batch under "dynamic"); if
      it is requested twice, the first one. None: the splits named "train",
      sliced or not. Pass e.g. "test[:8000]" to train on a slice of another split.
    - ``shuffle``: None shuffles the training split only; the buffer holds the
      whole split, reshuffled every epoch, seeded by ``seed``.
    - ``max_examples``: keep a random subset (seeded by ``seed``) of that size.
    - ``binarize``: None uses the data set's default; "none" keeps the values;
      "static" draws Bernoulli(pixel) once per split; "dynamic" draws afresh for
      every training batch and epoch (reproducible from ``seed``) and once, fixed,
      for other splits. Binary data sets are never binarized.
    """
    spec = get_spec(name)
    meta = spec.info
    splits = (split,) if isinstance(split, str) else split
    if not isinstance(splits, (tuple, list)) or not splits or not all(
            isinstance(s, str) for s in splits):
        raise ValueError(f"split must be a split name or a non-empty tuple of them, "
                         f"got {split!r}")
    if stream_from is not None:
        if not isinstance(split, str):
            raise ValueError(f"stream_from gives one split as an endless stream; got the splits {split!r}")
        if not isinstance(stream_from, numbers.Integral) or isinstance(stream_from, bool) or stream_from < 0:
            raise ValueError(f"stream_from must be a batch index, an integer >= 0, got {stream_from!r}")
    sizes = tuple(batch_size) if isinstance(batch_size, (tuple, list)) else (batch_size,) * len(splits)
    if len(sizes) != len(splits) or (isinstance(split, str) and sizes != (batch_size,)):
        raise ValueError(f"batch_size must be one positive integer, or one per split of a tuple of "
                         f"splits ({len(splits)} here), got {batch_size!r}")
    for size in sizes:
        _check_arguments(size, binarize, shuffle, seed, labels, max_examples)
    parsed = [check_split(meta, s) for s in splits]
    if train_split is not None:
        if not isinstance(train_split, str) or train_split not in splits:
            raise ValueError(f"train_split must be one of the requested splits "
                             f"{', '.join(map(repr, splits))}, got {train_split!r}")
        first = list(splits).index(train_split)   # the same split twice: the first is the training one
        is_train = [i == first for i in range(len(splits))]
    else:
        is_train = ["train" in p.bases for p in parsed]
    if labels and not meta.num_classes:
        raise DataError(f"dataset {meta.name!r} has no labels; use labels=False")
    mode = meta.default_binarize if binarize is None else binarize
    if mode == "none" or meta.binary:
        mode = None
    datasets = tuple(
        _pipeline(meta, train, load_arrays(name, s, data_dir, download, verify), mode,
                  size, shuffle, seed, labels, max_examples, drop_remainder, stream_from)
        for s, train, size in zip(splits, is_train, sizes))
    return datasets[0] if isinstance(split, str) else datasets


def _pipeline(meta, is_train, arrays, mode, batch_size, shuffle, seed, labels,
              max_examples, drop_remainder, stream_from) -> tf.data.Dataset:
    images, y = arrays
    if max_examples is not None and max_examples < len(images):
        keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:max_examples])
        images = images[keep]
        y = None if y is None else y[keep]
    dynamic = mode == "dynamic" and is_train
    if mode == "static" or (mode == "dynamic" and not is_train):
        images = bernoulli(images, seed)
    elements = (images, np.eye(meta.num_classes, dtype=np.float32)[y]) if labels else images
    shuffled = is_train if shuffle is None else shuffle
    ds = batches(elements, batch_size, shuffled, seed, drop_remainder, stream_from)
    if dynamic:
        ds = _binarize_batches(ds, seed, labels, stream_from)
    elif not shuffled and stream_from is None:
        ds = ds.cache()  # identical every epoch: batch once
    return ds.prefetch(tf.data.AUTOTUNE)


# The two random streams of an endless training stream (`batches`, `_binarize_batches`):
# pass p's order and batch b's binarization draw are seeded by folding p or b into (seed, stream).
_ORDER_STREAM, _BINARIZE_STREAM = 0, 1


def _stream_seed(seed: int, stream: int, index) -> tf.Tensor:
    """The stateless seed pair of element `index` of one of an endless stream's random streams."""
    return tf.random.experimental.stateless_fold_in(tf.constant([seed, stream], tf.int64), index)


def batches(arrays, batch_size: int, shuffle: bool, seed: int = 0, drop_remainder: bool = False,
            stream_from: int | None = None) -> tf.data.Dataset:
    """Batches of in-memory `arrays` (one array or a tuple of arrays with equal first
    dimensions); with `shuffle`, in a new random order every pass, seeded by `seed`.

    A pass draws one permutation of the N example indices (stateless), cuts it into rows of
    B indices, and gathers each batch in one op. The common form,
    `from_tensor_slices(x).shuffle(N).batch(B)`, moves every example through the pipeline one
    by one: 0.52 ms per batch of 100 MNIST images against 0.24 ms here, on input threads that
    share the 2 cores with the training step (docs/performance.md).

    `stream_from` None: one pass. Its permutation's key comes from a seeded `Dataset.random`
    redrawn on every iteration, so a repeated or second iterator gets the next order and the
    same seed repeats them all.

    `stream_from` g: the passes follow one another without end, starting at batch g (of
    P = ceil(N / B) per pass, or floor with `drop_remainder`). Pass p's permutation is drawn
    from `seed` and p alone, so the stream starts at pass g // P directly and skips only the
    g % P index rows before batch g: starting anywhere is as cheap as starting at 0. (A
    `Dataset.skip` of g batches of the repeated one-pass pipeline gathers every batch it
    skips, 0.1-0.5 ms each on 2 shared cores: `iwae_bmnist`'s paper run took 3.5 min to
    resume at pass 715 of 2,500 batches, and the wait grew with every pass.)
    """
    tensors = tf.nest.map_structure(tf.constant, arrays)
    count = len(tf.nest.flatten(arrays)[0])
    full, rest = divmod(count, batch_size)
    batches_per_pass = full + (1 if rest and not drop_remainder else 0)

    def rows_of(order):
        rows = tf.data.Dataset.from_tensor_slices(tf.reshape(order[:full * batch_size], [full, batch_size]))
        if rest and not drop_remainder:
            rows = rows.concatenate(tf.data.Dataset.from_tensors(order[full * batch_size:]))
        return rows

    file_order = tf.range(count, dtype=tf.int64)

    def permutation(seed_pair):
        return tf.random.experimental.stateless_shuffle(file_order, seed=seed_pair)

    if stream_from is None:
        if shuffle:
            keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
            orders = keys.map(lambda key: permutation(tf.stack([key, tf.constant(seed, tf.int64)])))
        else:
            orders = tf.data.Dataset.from_tensors(file_order)
        rows = (orders.flat_map(rows_of)
                .apply(tf.data.experimental.assert_cardinality(batches_per_pass)))   # flat_map hides it
    else:
        if not batches_per_pass:
            raise ValueError(f"{count} examples make no batch of {batch_size} with drop_remainder: "
                             f"an endless stream of them would never yield one")
        first_pass, offset = divmod(stream_from, batches_per_pass)
        passes = tf.data.Dataset.counter(first_pass)
        orders = passes.map(lambda p: permutation(_stream_seed(seed, _ORDER_STREAM, p))) if shuffle \
            else passes.map(lambda _: file_order)
        rows = orders.flat_map(rows_of).skip(offset)
    return rows.map(lambda rows: tf.nest.map_structure(lambda t: tf.gather(t, rows), tensors))


def bernoulli(images: np.ndarray, seed: int) -> np.ndarray:
    """One Bernoulli draw of every pixel (probability = pixel value), float32 0/1."""
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape, dtype=np.float32) < images).astype(np.float32)


def _binarize_batches(ds: tf.data.Dataset, seed: int, labels: bool, stream_from: int | None = None) -> tf.data.Dataset:
    """Binarize every batch with a fresh draw, different each epoch.

    Each batch is paired with a seed pair for a stateless draw, so the result does not depend
    on thread scheduling and the same ``seed`` repeats it. One pass (``stream_from`` None):
    the pairs come from a seeded random stream redrawn on every iteration. An endless stream
    from batch g: batch b's pair is drawn from ``seed`` and b alone.
    """
    if stream_from is None:
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        seed_pairs = keys.map(lambda key: tf.stack([key, tf.constant(seed, tf.int64)]))
    else:
        seed_pairs = tf.data.Dataset.counter(stream_from).map(lambda b: _stream_seed(seed, _BINARIZE_STREAM, b))

    def draw(x, seed_pair):
        u = tf.random.stateless_uniform(tf.shape(x), seed=seed_pair)
        return tf.cast(u < x, x.dtype)

    def draw_with_labels(xy, seed_pair):
        return draw(xy[0], seed_pair), xy[1]

    return tf.data.Dataset.zip((ds, seed_pairs)).map(
        draw_with_labels if labels else draw,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _check_arguments(batch_size, binarize, shuffle, seed, labels, max_examples) -> None:
    def is_int(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if not is_int(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, got {binarize!r}")
    if shuffle not in (None, True, False):
        raise ValueError(f"shuffle must be None, True or False, got {shuffle!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if labels not in (True, False):
        raise ValueError(f"labels must be True or False, got {labels!r}")
    if max_examples is not None and (not is_int(max_examples) or max_examples <= 0):
        raise ValueError(f"max_examples must be None or a positive integer, "
                         f"got {max_examples!r}")
