"""The training loop that runs on every Ray Train worker, in the shape of torchvision's reference: a short loop over
batches that calls ``train_one_step``, ``validate`` and ``save_and_report``.

Everything a worker holds for training is one ``WorkerState``; what the driver decided is one ``WorkerPlan``, whose
``config`` is the run's typed ``TrainConfig``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from deeplab_core.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from deeplab_core.models import unwrap
from deeplab_core.inference import normalize
from deeplab_core.io import exists, join_uri, read_bytes, write_bytes
from deeplab_core.metrics import ConfusionMatrix
from deeplab_core.models import ModelSpec
from deeplab_core.inference_settings import InferenceSettings
from deeplab_core.runner import ModelRunner
from deeplab_core.msc import msc_losses
from deeplab_core.training import build_optimizer, freeze_batchnorm, poly_lr_scheduler, segmentation_loss
from pipelines.training.config import TrainConfig
from pipelines.training.log import TrainingLog

WORKER_REPORTS = "workers"
PREFETCH_BATCHES = 4


@dataclass(frozen=True)
class WorkerPlan:
    """What the driver hands every worker: the run's configuration (class count resolved), the model's
    description (what it builds, and what its checkpoints record), and whether there is a validation set."""

    config: TrainConfig
    spec: ModelSpec
    has_val: bool


@dataclass
class WorkerState:
    """One worker's model, optimizer, schedule and arithmetic, and where it stands."""

    rank: int
    world_size: int
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    iteration: int = 0
    best_miou: float = -1.0
    resumed_from: int | None = None  # the checkpoint's iteration when this worker continued a run
    # This rank's spans of iterations in earlier worker groups of the run (an elastic resize or a restart starts a
    # new group): [{"world_size", "first", "last"}], read back from its record.
    earlier_spans: list[dict] = field(default_factory=list)


@dataclass
class Throughput:
    """Training images/s since the loop started, and at steady state: after the first iterations, which pay for
    cuDNN autotuning and the data pipeline's start. Time spent validating and checkpointing (``paused``) is not
    training time and is left out of both."""

    images_per_step: int
    first_iteration: int
    warmup: int
    started: float = field(default_factory=time.monotonic)
    steady_started: float | None = None
    paused_seconds: float = 0.0  # since ``started``
    paused_before_steady: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup == 0:
            self.steady_started = self.started

    def stepped(self, iteration: int) -> float:
        if iteration - self.first_iteration == self.warmup:
            self.steady_started, self.paused_before_steady = time.monotonic(), self.paused_seconds
        return (iteration - self.first_iteration) * self.images_per_step / self._elapsed(self.started, 0.0)

    def steady(self, iteration: int) -> float | None:
        steps = iteration - self.first_iteration - self.warmup
        if self.steady_started is None or steps <= 0:
            return None
        return steps * self.images_per_step / self._elapsed(self.steady_started, self.paused_before_steady)

    @contextlib.contextmanager
    def paused(self):
        started = time.monotonic()
        try:
            yield
        finally:
            self.paused_seconds += time.monotonic() - started

    def eta(self, iteration: int, last_iteration: int) -> str:
        per_step = self._elapsed(self.started, 0.0) / max(iteration - self.first_iteration, 1)
        return time.strftime("%H:%M:%S", time.gmtime((last_iteration - iteration) * per_step))

    def _elapsed(self, since: float, paused_before: float) -> float:
        return max(time.monotonic() - since - (self.paused_seconds - paused_before), 1e-9)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train

    plan: WorkerPlan = loop_config["plan"]
    config = plan.config
    # A performance note from DDP about 1x1-convolution gradient layouts, printed by every worker: noise in the logs.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    worker = setup_worker(config, plan.spec)
    restore(worker)
    if worker.resumed_from is not None:
        worker.earlier_spans = earlier_spans(config.output, worker.rank)
    first_iteration = worker.iteration
    class_names = plan.spec.class_names
    log = TrainingLog.resume(config.output, class_names, worker.iteration) if worker.rank == 0 else None

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if plan.has_val else None
    seen = []  # the unique seeds of the rows this worker trained on: evidence that workers get different shards
    images_per_step = config.batch_size * config.accumulation * worker.world_size
    throughput = Throughput(images_per_step, worker.iteration,
                            warmup=min(5, max(0, (config.iterations - worker.iteration) // 4)))
    losses: list[float] = []
    # Batches prepared ahead, as a DataLoader's workers do: the GPU does not wait on the copy of the next one.
    batches = train_shard.iter_torch_batches(batch_size=config.batch_size, device=worker.device, drop_last=True,
                                             prefetch_batches=PREFETCH_BATCHES)
    worker.model.train()
    for micro_step, batch in enumerate(batches):
        if worker.iteration >= config.iterations:
            break
        seen.extend(batch["seed"].tolist()[: max(0, 2000 - len(seen))])
        optimizer_step = (micro_step + 1) % config.accumulation == 0
        losses.append(train_one_step(worker, batch, config.accumulation, optimizer_step,
                                     config.msc_scales if config.msc else None))
        if not optimizer_step:
            continue
        images_per_second = throughput.stepped(worker.iteration)
        metrics = {"iteration": worker.iteration, "loss": sum(losses) / len(losses),
                   "lr": worker.optimizer.param_groups[0]["lr"], "images_per_second": images_per_second}
        last = worker.iteration == config.iterations
        if worker.rank == 0 and (worker.iteration % config.log_every == 0 or last):
            worker_log(f"[train] iter {worker.iteration}/{config.iterations} loss {metrics['loss']:.4f} "
                       f"lr {metrics['lr']:.3g} {images_per_second:.1f} img/s "
                       f"eta {throughput.eta(worker.iteration, config.iterations)}")
            log.add(metrics)
        if worker.iteration % config.val_every == 0 or last:
            losses.clear()
            with throughput.paused():
                if val_shard is not None:
                    metrics.update(validate(worker, val_shard, config.num_classes, config.batch_size,
                                            class_names))
                if log is not None:
                    log.add(metrics)
                    log.write()
                save_and_report(worker, metrics, plan.spec)
                # Recorded at each checkpoint too: a resize ends this worker group without a last word.
                write_worker_report(config.output, worker, seen, None, first_iteration)

    write_worker_report(config.output, worker, seen, throughput.steady(worker.iteration), first_iteration)


def setup_worker(config: TrainConfig, spec: ModelSpec) -> WorkerState:
    """The model (pretrained backbone, BatchNorm policy, channels_last on GPUs, wrapped for DDP), its optimizer with
    the 10x head, the poly schedule and the AMP scaler."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    pretrained = config.pretrained_backbone
    model = spec.build(pretrained_backbone=True if pretrained == "cache" else (pretrained or False))
    if config.freeze_bn:
        freeze_batchnorm(model)
    elif config.sync_bn and world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = ray.train.torch.prepare_model(model.to(memory_format=memory_format))  # NHWC: cuDNN's tensor-core kernels
    optimizer = build_optimizer(model, config.lr, config.weight_decay, config.momentum,
                                config.head_lr_multiplier)
    scheduler = poly_lr_scheduler(optimizer, config.iterations, config.lr_power)
    amp_dtype = amp_dtype_for(config.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return WorkerState(rank, world_size, device, model, optimizer, scheduler, scaler, amp_dtype, memory_format)


def restore(worker: WorkerState) -> None:
    """Continue from the run's latest registered checkpoint, if Ray Train gives one (resume, or a restart)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return
    with checkpoint.as_directory() as folder:
        state = load_checkpoint(folder).state
    unwrap(worker.model).load_state_dict(state["model_state"])
    worker.optimizer.load_state_dict(state["optimizer_state"])
    worker.scheduler.load_state_dict(state["scheduler_state"])
    worker.scaler.load_state_dict(state["scaler_state"])
    worker.iteration, worker.best_miou = state["iteration"], state.get("best_miou", -1.0)
    worker.resumed_from = worker.iteration
    if worker.rank == 0:
        worker_log(f"[train] resumed from iteration {worker.iteration} (checkpoint {checkpoint.path})")


def train_one_step(worker: WorkerState, batch: dict, accumulation: int, optimizer_step: bool,
                   msc_scales: tuple[float, ...] | None = None) -> float:
    """Forward and backward of one micro-batch; with ``optimizer_step``, the optimizer and schedule step too;
    with ``msc_scales``, multi-scale inputs (``deeplab_core.msc``). Returns the micro-batch's loss."""
    images = normalize(batch["image"]).contiguous(memory_format=worker.memory_format)
    with gradient_sync(worker.model, optimizer_step):
        with torch.autocast(worker.device.type, dtype=worker.amp_dtype, enabled=worker.amp_dtype is not None):
            if msc_scales:
                loss = torch.stack(msc_losses(worker.model, images, batch["mask"], msc_scales)).sum()
            else:
                loss = segmentation_loss(worker.model(images), batch["mask"])
        worker.scaler.scale(loss / accumulation).backward()
    if optimizer_step:
        worker.scaler.step(worker.optimizer)
        worker.scaler.update()
        worker.optimizer.zero_grad(set_to_none=True)
        worker.scheduler.step()
        worker.iteration += 1
    return loss.item()


def validate(worker: WorkerState, shard, num_classes: int, batch_size: int, class_names: list[str]) -> dict:
    """Validation scores over every worker's shard; leaves the model in training mode."""
    matrix = evaluate_shard(worker.model, shard, num_classes, worker.device, batch_size)
    scores = {"val_miou": matrix.miou(), "val_pixel_accuracy": matrix.pixel_accuracy(),
              **{f"val_iou/{name}": float(value) for name, value in zip(class_names, matrix.per_class_iou())}}
    worker.best_miou = max(worker.best_miou, scores["val_miou"])
    if worker.rank == 0:
        worker_log(f"[train] iter {worker.iteration} validation mIoU {scores['val_miou']:.4f} "
                   f"pixel accuracy {scores['val_pixel_accuracy']:.4f}")
    worker.model.train()
    return scores


def evaluate_shard(model: torch.nn.Module, shard, num_classes: int, device: torch.device,
                   batch_size: int) -> ConfusionMatrix:
    """Confusion matrix of this worker's validation shard, summed over all workers (all-reduce)."""
    import torch.distributed as dist

    net = unwrap(model).eval()
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        # DDP syncs BatchNorm statistics only at the start of a training forward, so each worker's have drifted
        # by one batch; validate every shard with rank 0's, the ones the checkpoint saves.
        for buffer in net.buffers():
            dist.broadcast(buffer.data, src=0)
    # fp32, not the training's AMP or evaluate's auto: checkpoints are chosen by comparing these scores across
    # iterations and runs, which must not move with a GPU's bf16 rounding (~0.8 % of pixels flip with random weights).
    runner = ModelRunner(net, InferenceSettings(precision="fp32", batch_size=batch_size, crf=None), device)
    matrix = ConfusionMatrix(num_classes)
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        result = runner.run(list(batch["image"]), labels=True)
        for labels, mask, error in zip(result.labels, batch["mask"], result.errors):
            if error is not None:
                raise error
            matrix.update(labels, mask)
    counts = torch.from_numpy(matrix.counts).to(device)
    if distributed:
        dist.all_reduce(counts)
    return ConfusionMatrix(num_classes, counts.cpu().numpy())


def save_and_report(worker: WorkerState, metrics: dict, spec: ModelSpec) -> None:
    """Report ``metrics`` to Ray Train with a checkpoint (model, optimizer, schedule, scaler, iteration)."""
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if worker.rank == 0:  # DDP keeps the weights identical on every worker: one copy is enough
            save_checkpoint(str(Path(folder) / CHECKPOINT_FILE), worker.model, spec,
                            optimizer_state=worker.optimizer.state_dict(),
                            scheduler_state=worker.scheduler.state_dict(), scaler_state=worker.scaler.state_dict(),
                            iteration=worker.iteration, best_miou=worker.best_miou, metrics=metrics)
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)


def write_worker_report(output: str, worker: WorkerState, seen: list[int], steady_images_per_second: float | None,
                        first_iteration: int) -> None:
    """``<output>/workers/rank_N.json``: the rows this worker saw, its weights' checksum, its steady-state rate, the
    iteration it resumed from (None for a run that did not restart), and its spans: the iterations it trained in
    each worker group of the run and that group's world size (an elastic run's resizes show here)."""
    checksum = sum(float(p.detach().double().sum()) for p in unwrap(worker.model).parameters())
    span = {"world_size": worker.world_size, "first": first_iteration, "last": worker.iteration}
    report = {"rank": worker.rank, "world_size": worker.world_size, "iteration": worker.iteration,
              "samples_seen": seen, "parameter_checksum": checksum,
              "steady_images_per_second": steady_images_per_second, "resumed_from": worker.resumed_from,
              "spans": [*worker.earlier_spans, span]}
    write_bytes(worker_report_uri(output, worker.rank), json.dumps(report).encode())


def worker_report_uri(output: str, rank: int) -> str:
    return join_uri(output, WORKER_REPORTS, f"rank_{rank}.json")


def earlier_spans(output: str, rank: int) -> list[dict]:
    """The spans rank ``rank`` recorded in earlier worker groups of this run (none when it has no record yet)."""
    uri = worker_report_uri(output, rank)
    if not exists(uri):
        return []
    return list(json.loads(read_bytes(uri)).get("spans", []))


def worker_log(message: str) -> None:
    """A progress line from a worker, printed once. Ray Train wraps ``print`` on its workers to send each line both
    to the process's stdout and to its logger, which the driver shows again; the process's own stdout is shown
    once."""
    sys.__stdout__.write(message + "\n")
    sys.__stdout__.flush()


def gradient_sync(model: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Micro-batches before an optimizer step keep their gradients local; DDP all-reduces the sum once, at the step."""
    if enabled or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def amp_dtype_for(amp: bool, device: torch.device) -> torch.dtype | None:
    if not amp:
        return None
    if device.type != "cuda":
        worker_log("[train] --amp only applies on GPUs; training in float32 on the CPU")
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
