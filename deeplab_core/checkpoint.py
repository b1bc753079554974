"""One self-describing checkpoint format, readable and writable at any URI.

A checkpoint is a single ``torch.save`` file holding ``model_state`` and a ``config`` dict sufficient to
rebuild the model (arch, backbone, output_stride, num_classes, class_names, mean, std), plus optional
training state (optimizer_state, scheduler_state, iteration, metrics, ...).

Where a checkpoint URI is expected, three forms are accepted: the file itself; a training ``--output``
folder (its exported ``best_model.pt``); a Ray Train checkpoint folder (its ``checkpoint.pt``).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deeplab_core.inference import IMAGENET_MEAN, IMAGENET_STD
from deeplab_core.io import exists, is_dir, join_uri, list_files, read_bytes, write_bytes
from deeplab_core.models import DeepLab, ModelSpec, unwrap

CHECKPOINT_FILE = "checkpoint.pt"
BEST_MODEL_FILE = "best_model.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or incomplete; the message names the URI."""


def model_config(model: nn.Module, class_names: list[str] | None = None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict[str, Any]:
    """A built model's on-disk ``config`` dict (``ModelSpec.of_model(...).to_config()``)."""
    return ModelSpec.of_model(model, class_names, mean, std).to_config()


def save_checkpoint(uri: str, model: nn.Module, spec: ModelSpec | Mapping[str, Any] | None = None,
                    **training_state: Any) -> None:
    """Write ``model`` (unwrapped from DDP), its ``spec`` (``ModelSpec.of_model``'s without one; an on-disk config
    dict is accepted as written by earlier versions) and any extra training state to one file at ``uri``."""
    net = unwrap(model)
    if spec is None:
        spec = ModelSpec.of_model(net)
    elif not isinstance(spec, ModelSpec):
        try:
            spec = ModelSpec.from_config(spec)
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{uri}: {str(err).strip(chr(39))}") from None
    buffer = io.BytesIO()
    torch.save({"model_state": net.state_dict(), "config": spec.to_config(), **training_state}, buffer)
    write_bytes(uri, buffer.getvalue())


def resolve_checkpoint_uri(uri: str) -> str:
    """The checkpoint file that ``uri`` designates (the file, or the file inside a known folder layout)."""
    if is_dir(uri):
        for name in (BEST_MODEL_FILE, CHECKPOINT_FILE):
            candidate = join_uri(uri, name)
            if exists(candidate):
                return candidate
        found = [u.rsplit("/", 1)[-1] for u in list_files(uri)][:10]
        raise CheckpointError(f"{uri} is a folder without {BEST_MODEL_FILE} or {CHECKPOINT_FILE} (it holds: {found})")
    if not exists(uri):
        raise CheckpointError(f"{uri}: no such checkpoint file or folder")
    return uri


@dataclass
class Checkpoint:
    uri: str
    digest: str  # sha256 of the file's bytes, first 16 hex digits: names the exact weights a result came from
    spec: ModelSpec  # the model's description (checked when the checkpoint was loaded)
    state: dict[str, Any]  # everything in the file: model_state, config, training state

    @property
    def config(self) -> dict[str, Any]:
        """The spec as the on-disk ``config`` dict (with the keys later versions added, filled in)."""
        return self.spec.to_config()


def load_checkpoint(uri: str) -> Checkpoint:
    path = resolve_checkpoint_uri(uri)
    data = read_bytes(path)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad files
        # torch's own message runs to several lines and suggests weights_only=False, which would run whatever code
        # the file holds: its first line only, and no such advice.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in reason or "Weights only" in reason:
            reason = "it holds objects other than tensors and plain values, which are never unpickled here"
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {reason}); "
                              "give the file pipelines.train wrote (best_model.pt) or its run folder") from None
    if not isinstance(state, dict) or "model_state" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a deeplab-ray checkpoint (needs 'model_state' and 'config')")
    try:
        spec = ModelSpec.from_config(state["config"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: {str(err).strip(chr(39))}") from None
    return Checkpoint(uri=path, digest=hashlib.sha256(data).hexdigest()[:16], spec=spec, state=state)


def build_from_checkpoint(checkpoint: Checkpoint) -> DeepLab:
    """Rebuild the model a checkpoint describes and load its weights (in eval mode, on the CPU). The model holds
    ``checkpoint.state``'s tensors themselves, not copies."""
    spec = checkpoint.spec
    # Built without memory and filled with the checkpoint's own tensors: no random initialisation to overwrite,
    # which a model actor's start-up would otherwise pay (and the driver, which checks the weights before Ray).
    with torch.device("meta"):
        model = spec.build()
    try:
        model.load_state_dict(checkpoint.state["model_state"], strict=True, assign=True)
    except RuntimeError as err:
        details = " ".join(str(err).split())  # torch's message spans many lines: one line, shortened
        details = details if len(details) <= 240 else details[:240] + " ..."
        raise CheckpointError(f"{checkpoint.uri}: weights do not fit the model in its config ({spec.arch}/"
                              f"{spec.backbone}, {spec.num_classes} classes): {details}") from None
    return model.eval()


def load_model(uri: str) -> tuple[DeepLab, Checkpoint]:
    checkpoint = load_checkpoint(uri)
    return build_from_checkpoint(checkpoint), checkpoint
