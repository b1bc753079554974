"""Listing helpers the layouts share: files keyed by their path without extension, and the splits of layouts that
keep them as lists of keys (``splits/<name>.txt``) or have none (every sample in ``train``, a seeded share held out as
``val``). One listing of a folder per call: linear in the number of files, on local disks and object stores alike.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable

import numpy as np

from deeplab_core.data.layout import DatasetError, ListOptions
from deeplab_core.io import exists, filesystem, join_uri, list_files, list_relative, read_text

SPLITS_DIR = "splits"
TRAIN, VAL = "train", "val"
# The held-out share (--val-fraction) is drawn with this seed, whatever the training seed, so that a training run and
# a later evaluation of the same root agree on which samples are "val".
HOLD_OUT_SEED = 0


def files_by_key(folder: str, extensions: Iterable[str], suffix: str = "") -> dict[str, str]:
    """``{key: uri}`` of the files under ``folder`` (recursively) whose names end with ``suffix`` + one of
    ``extensions`` (lower-cased); the key is the path relative to ``folder`` without that ending. Two files with one
    key (``a.jpg`` and ``a.png``) are refused: which one is meant cannot be told."""
    if not exists(folder):
        return {}
    wanted = tuple(e.lower() for e in extensions)
    found: dict[str, str] = {}
    for relative, uri in list_relative(folder).items():
        stem, extension = posixpath.splitext(relative)
        if extension.lower() not in wanted or not stem.endswith(suffix):
            continue
        key = stem[: len(stem) - len(suffix)] if suffix else stem
        if key in found:
            raise DatasetError(f"{uri} and {found[key]} are one sample under two extensions: keep one")
        found[key] = uri
    return found


def check_paired(images: dict[str, str], labels: dict[str, str], what: str, label_of: Callable[[str], str],
                 image_of: Callable[[str], str]) -> None:
    """Refuse, naming the file, an image whose key has no label and a label whose key has no image; ``what`` names
    the labels ("mask", "label"), ``label_of(key)`` and ``image_of(key)`` the file each key expects."""
    for key, uri in images.items():
        if key not in labels:
            raise DatasetError(f"{uri}: no {what} {label_of(key)}")
    for key, uri in labels.items():
        if key not in images:
            raise DatasetError(f"{uri}: {what} without its image {image_of(key)}")


def listed_splits(root: str) -> list[str]:
    """The split names under ``<root>/splits/`` (``<name>.txt``)."""
    folder = join_uri(root, SPLITS_DIR)
    if not exists(folder):
        return []
    return sorted(posixpath.basename(uri)[:-4] for uri in list_files(folder, {".txt"}))


def split_keys(root: str, split: str, keys: Iterable[str], options: ListOptions, what: str) -> list[str]:
    """The keys of ``split``: those ``<root>/splits/<split>.txt`` lists (each must be among ``keys``); without a
    ``splits/`` folder, every key is in ``train`` but for ``options.val_fraction`` of them, held out as ``val``.
    ``what`` names the samples in errors ("pairs", "annotations")."""
    keys = sorted(keys)
    names = listed_splits(root)
    if names:
        uri = join_uri(root, SPLITS_DIR, f"{split}.txt")
        if split not in names:
            raise DatasetError(f"{uri} not found (available splits: {names})")
        listed = [line.strip() for line in read_text(uri).splitlines() if line.strip()]
        known = set(keys)
        missing = [key for key in listed if key not in known]
        if missing:
            raise DatasetError(f"{uri} lists {missing[0]!r}, which has no {what} under {root}"
                               + (f" ({len(missing) - 1} more)" if len(missing) > 1 else ""))
        return listed
    if split not in (TRAIN, VAL):
        raise DatasetError(f"{root} has no {SPLITS_DIR}/ folder, so its only splits are {TRAIN} and (with "
                           f"--val-fraction) {VAL}; got split {split!r}")
    held_out = set(held_out_keys(keys, options.val_fraction))
    if split == VAL and not held_out:
        raise DatasetError(f"{root} has no {SPLITS_DIR}/{VAL}.txt, so every sample is in {TRAIN}; pass --val-fraction "
                           f"F to hold a share out as {VAL}, or write {join_uri(root, SPLITS_DIR, VAL + '.txt')}")
    return [key for key in keys if (key in held_out) == (split == VAL)]


def held_out_keys(keys: list[str], fraction: float) -> list[str]:
    """``fraction`` of ``keys`` (at least one when ``fraction`` > 0), chosen with ``HOLD_OUT_SEED``."""
    if fraction <= 0 or not keys:
        return []
    if fraction >= 1:
        raise DatasetError(f"--val-fraction must be below 1, got {fraction}")
    count = max(1, round(len(keys) * fraction))
    chosen = np.random.default_rng(HOLD_OUT_SEED).permutation(len(keys))[:count]
    return [keys[index] for index in sorted(chosen)]


def free_splits(root: str, options: ListOptions) -> list[str]:
    """The splits of a layout that keeps them as ``splits/<name>.txt`` or has none."""
    return listed_splits(root) or ([TRAIN, VAL] if options.val_fraction > 0 else [TRAIN])


def read_many(uris: list[str]) -> dict[str, bytes]:
    """The bytes of many files in one call: fsspec reads an object store's files concurrently."""
    if not uris:
        return {}
    fs, _ = filesystem(uris[0])
    paths = {filesystem(uri)[1]: uri for uri in uris}
    contents = fs.cat(list(paths))
    return {paths[path]: data for path, data in contents.items()}
