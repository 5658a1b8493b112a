"""``train(config)``: the training loop, and ``evaluate``.

Per step: images in [0, 1] move to the device, the mixer mixes them (its own generator), they are
normalised on the device, and the loss is ``cross_entropy(logits, soft_targets)``. Per epoch: eval,
metrics.jsonl + TensorBoard, and an atomic checkpoint. SIGTERM/SIGINT finish the current step and
write a checkpoint that records the step, so ``--resume`` continues *exactly* where it stopped
(the rest of that epoch, same batches, same augmentations, same mixing). A non-finite loss stops
the run at once and keeps the last good checkpoint.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel

from ..mixers.base import check_values
from ..models import create_model
from ..serialization import CheckpointError, OutputWriteError, atomic_write, half_where_safe, load_weights_into
from . import distributed as D
from .checkpoint import (
    capture_rng,
    check_compatible,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    validate_checkpoint,
)
from .components import AMP_DTYPES, build_parts, derive_seed, load_scheduler_state, scheduler_state
from .config import ConfigError, TrainConfig
from .data_setup import prepare_data
from .run_folder import BEST_WEIGHTS_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME, RunFolder
from .run_io import (
    RunWriter,
    StopSignals,
    clear_earlier_outputs,
    prepare_output_dir,
    release_run_dir,
    resume_command,
)
from .run_record import recorded_config


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; the run stopped and the last good checkpoint was kept."""


def _normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images - mean) / std


def _stats(info: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(info.mean, device=device).view(1, -1, 1, 1),
            torch.tensor(info.std, device=device).view(1, -1, 1, 1))


def _autocast(device: torch.device, amp: str):
    dtype = AMP_DTYPES[amp] if device.type == "cuda" else None
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


@torch.no_grad()
def evaluation_sums(model: torch.nn.Module, loader, info: Any, device: torch.device, *, amp: str = "off",
                    channels_last: bool = False) -> list[float]:
    """``[loss_sum, correct_top1, correct_top5, count]`` over ``loader`` (summable over ranks)."""
    was_training = model.training
    model.eval()
    mean, std = _stats(info, device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    count = 0  # on the host: a tensor made from it each batch would be a blocking host-to-device copy
    try:
        for batch in loader:
            images, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            x = _normalize(images, mean, std)
            if channels_last and device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, amp):
                logits = model(x)
            logits = logits.float()
            _check_labels(labels, logits.shape[1])
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hit = top == labels.unsqueeze(1)
            sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(), hit[:, 0].sum().double(),
                                 hit.any(1).sum().double()])
            count += labels.numel()
    finally:
        model.train(was_training)
    return [*sums.tolist(), float(count)]


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Labels must be class indices of the model's ``num_classes`` outputs (no host sync off the CPU)."""
    check_values(((labels >= 0) & (labels < num_classes)).all(),
                 f"a batch holds labels outside [0, {num_classes}): the model has {num_classes} outputs (the run's "
                 "classes: classes= or the dataset's .classes); check the dataset's labels or the classes given")


def _metrics(sums: list[float]) -> dict[str, float]:
    loss, c1, c5, n = sums
    if n == 0:
        raise ValueError("the evaluation set is empty; give --val-fraction > 0 or --val-data FOLDER")
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n, "count": int(n)}


def evaluate(model: torch.nn.Module, loader, info: Any, device: torch.device | str, *,
             amp: str = "off") -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy of ``model`` over ``loader`` (images in [0, 1])."""
    return _metrics(evaluation_sums(model, loader, info, torch.device(device), amp=amp))


def write_weights(model: torch.nn.Module, out: Path, name: str = WEIGHTS_NAME) -> Path:
    """The final weights as fp16 safetensors (integer buffers kept): small, safe to share, loadable anywhere.

    A tensor with values beyond fp16's range (e.g. a large BatchNorm ``running_var``) stays fp32, with a warning,
    rather than becoming inf.
    """
    state, kept = half_where_safe(model.state_dict())
    if kept:
        warnings.warn(f"{out / name}: kept {len(kept)} tensor(s) in float32 because their values exceed "
                      f"float16's range (65504): {', '.join(kept[:5])}", stacklevel=2)
    meta = {"format": "pt", "dtype": "float16" if not kept else "float16, float32 for: " + ", ".join(kept)}
    return atomic_write(out / name, lambda tmp: save_file(state, tmp, metadata=meta))


def _warn_cpu_noops(cfg: TrainConfig, device: torch.device) -> None:
    if device.type != "cuda" and cfg.run.amp != "off":
        warnings.warn(f"--amp {cfg.run.amp} only applies on CUDA; training in float32 on {device}", stacklevel=3)
    if device.type != "cuda" and cfg.run.channels_last:
        warnings.warn(f"--channels-last only applies on CUDA; ignored on {device}", stacklevel=3)


def train(config: TrainConfig, *, model: torch.nn.Module | None = None, train_dataset: Any = None,
          eval_dataset: Any = None, classes: Sequence[str] | int | None = None, mean: Sequence[float] | None = None,
          std: Sequence[float] | None = None) -> dict[str, Any]:
    """Train with ``config``; returns the final results (also written to ``<output_dir>/results.json``).

    ``model``: your ``nn.Module`` instead of ``config.model`` (used as given: no ``init``); it takes normalised
    images and returns logits. ``train_dataset``/``eval_dataset``: your datasets instead of ``config.dataset``, each
    item ``(image, label)`` with a float (C, H, W) image in [0, 1], already augmented as you want it (the loader
    path; torch's RNG is seeded per item, so ``--resume`` stays exact). ``classes`` (names or a count; default
    ``train_dataset.classes``) and ``mean``/``std`` (what the trainer normalises with after mixing; default
    ImageNet's) go with them. Returns ``{"status": "interrupted", ...}`` after SIGTERM/SIGINT (a checkpoint was
    written); raises ``NonFiniteLossError`` on a NaN/Inf loss, ``ConfigError``/``CheckpointError`` on bad input.
    """
    device = D.resolve_device(config.run.device)
    dist = D.setup(device)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":  # cheap on CPU; on GPU it would force slow kernels
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        given = {"model": model, "train_dataset": train_dataset, "eval_dataset": eval_dataset, "classes": classes,
                 "mean": mean, "std": std}
        return _Run(config, dist, device, given).run()
    except RuntimeError as err:  # a killed rank: one line on the survivors, not gloo's traceback
        if isinstance(err, NonFiniteLossError) or not D.lost_peer(err, dist):
            raise
        raise D.peer_lost_error(err, dist, output_dir=config.run.output_dir,
                                resume=resume_command(Path(config.run.output_dir), dist)) from None
    finally:
        release_run_dir(Path(config.run.output_dir))
        torch.use_deterministic_algorithms(deterministic_before)
        D.cleanup(dist)


class _Run:
    def __init__(self, cfg: TrainConfig, dist: D.DistInfo, device: torch.device,
                 given: dict[str, Any] | None = None) -> None:
        self.cfg, self.dist, self.device = cfg, dist, device
        given = given or {}
        self.out = Path(cfg.run.output_dir)
        _warn_cpu_noops(cfg, device)
        run = cfg.run
        ckpt = prepare_output_dir(self.out, resume=run.resume, auto_resume=run.auto_resume, overwrite=run.overwrite,
                                  is_main=dist.is_main)
        # One call per lower module, each once: data (with the attention source and batches), model, the rest.
        self.info, self.batches, extractor = prepare_data(cfg, dist, device, given)
        self.folder = RunFolder(self.out)
        self.config = recorded_config(
            cfg.to_dict(), num_classes=self.info.num_classes, classes=self.info.classes,
            image_size=self.info.image_size, mean=self.info.mean, std=self.info.std,
            train_fingerprint=self.info.train_fingerprint, world_size=dist.world_size, data_path=self.batches.path,
            # real paths, so a symlinked runs/ folder, or the run read through the link's target, counts from the
            # same place
            base_dir=os.path.relpath(os.path.realpath(os.getcwd()), self.out.resolve()))
        if given.get("train_dataset") is not None:
            self.config["dataset"] = self.info.name  # not cfg.data.dataset: the run did not use it
        torch.manual_seed(cfg.run.seed)  # model init: the same weights for every method of a seed (extractors first)
        if given.get("model") is not None:
            model = given["model"]
            if not isinstance(model, torch.nn.Module):
                raise ConfigError(f"model= must be an nn.Module, got {type(model).__name__}")
            ignored = [k for k in ("model", "init") if k in cfg.explicit]
            if ignored:  # never silently ignored
                raise ConfigError(f"model= is used as given, so the option(s) {ignored} would be ignored; remove them")
            self.config["model"] = f"module:{type(model).__name__}"  # what the checkpoint's identity check compares
        else:
            model = create_model(cfg.model.name, num_classes=self.info.num_classes, image_size=self.info.image_size,
                                 init=cfg.model.init)
        self.channels_last = cfg.run.channels_last and device.type == "cuda"
        self.model = model.to(device,
                              memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        self.optimizer, self.scheduler, self.mixer = build_parts(cfg, self.model, self.info.num_classes, extractor)
        self.fused = bool(self.optimizer.defaults.get("fused"))
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.run.amp == "fp16" and device.type == "cuda")
        self.generator = torch.Generator()  # CPU: the same draws on any device
        self.mean, self.std = _stats(self.info, device)
        self.epoch, self.step, self.partial = 0, 0, {"loss_sum": 0.0, "images": 0, "time_s": 0.0}
        # Device-side accumulators, read only at log points and epoch ends (no host sync inside a step).
        self._loss_acc = torch.zeros((), dtype=torch.float64, device=device)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self._found_inf = torch.zeros((), device=device)
        self._one = torch.ones((), device=device)
        self.curve: list[dict[str, Any]] = []
        self.wall_time = 0.0
        self._ema_state = None
        if ckpt is not None:
            self._restore(ckpt)
        self.ema = self._build_ema()
        self.mixing = self.mixer is not None
        self.ddp = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None) \
            if dist.enabled else self.model
        self.step_model = torch.compile(self.ddp) if cfg.run.compile else self.ddp

    # ----------------------------------------------------------------- checkpoints
    def _restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        changed = check_compatible(ckpt, self.config, path)
        done = ckpt["epoch"]
        epochs = self.cfg.optim.epochs
        if isinstance(done, int) and done > epochs:  # the run would "finish" at its old epoch, recorded as new
            raise CheckpointError(f"{path} holds {done} finished epochs, more than --epochs {epochs}: a run "
                                  f"cannot be shortened. Nothing was changed. Resume with --epochs {done} or more, or "
                                  "evaluate the run as it is")
        if changed and self.dist.is_main:
            warnings.warn(f"resuming {path} with changed options: {changed}", stacklevel=2)
        validate_checkpoint(ckpt, path, optimizer=self.optimizer,
                            scheduler_state=scheduler_state(self.scheduler), scaler=self.scaler,
                            mixer_generator=self.generator)
        load_weights_into(self.model, ckpt["model"], source=str(path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        load_scheduler_state(self.scheduler, ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt.get("step", 0))
        self._ema_state = ckpt.get("ema")
        partials = ckpt.get("partial_per_rank")
        own = partials[self.dist.rank] if partials and len(partials) == self.dist.world_size else ckpt.get("partial")
        self.partial = dict(own or self.partial)
        self.curve, self.wall_time = list(ckpt.get("curve", [])), float(ckpt.get("wall_time_s", 0.0))
        per_rank = ckpt.get("rng_per_rank")
        rng = per_rank[self.dist.rank] if per_rank and len(per_rank) == self.dist.world_size else ckpt["rng"]
        restore_rng(rng, self.generator)

    def _build_ema(self) -> Any:
        """timm's ModelEmaV3 of the weights (and buffers) for ``--ema-decay``, from the checkpoint's when resuming."""
        if self.cfg.optim.ema_decay is None:
            return None
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(self.model, decay=self.cfg.optim.ema_decay)
        if self._ema_state is not None:
            load_weights_into(ema.module, self._ema_state, source="the checkpoint's EMA weights")
        return ema

    def _check_weights_finite(self, epoch: int) -> None:
        # The loss is checked before each update, so the update of an epoch's last step would go unchecked:
        # never evaluate or checkpoint weights that an update made NaN/Inf.
        # One host read for all of them (each read waits for the device), not one per tensor.
        weights = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        finite = not weights or bool(torch.stack([torch.isfinite(t).all() for t in weights]).all())
        if D.any_rank([not finite], self.device, self.dist)[0]:
            raise NonFiniteLossError(
                f"the model's weights became non-finite (NaN/Inf) in epoch {epoch}, up to step {self.step}; "
                f"training stopped and the last good checkpoint (if any) in {self.out} was kept. Likely causes: "
                f"a learning rate too high (try a lower --lr), fp16 overflow (try --amp bf16 or --amp off), or NaN/Inf "
                f"in the input data.")

    def _save(self) -> None:
        self._check_weights_finite(self.epoch + (self.step > 0))
        rng = capture_rng(self.generator)
        per_rank = partials = None
        if self.dist.enabled and self.step > 0:  # mid-epoch: every rank's mixer stream is needed to continue exactly
            gathered: list[Any] = [None] * self.dist.world_size
            # and every rank's running loss: each rank sums its own images until the epoch's all-reduce
            torch.distributed.all_gather_object(gathered, (rng, self.partial))
            per_rank, partials = [g[0] for g in gathered], [g[1] for g in gathered]
        if not self.dist.is_main:
            return
        save_checkpoint({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "scheduler": scheduler_state(self.scheduler), "scaler": self.scaler.state_dict(),
                         "epoch": self.epoch, "step": self.step, "partial": self.partial, "rng": rng,
                         "rng_per_rank": per_rank, "partial_per_rank": partials,
                         "config": self.config, "train_fingerprint": self.info.train_fingerprint, "curve": self.curve,
                         "best_top1": max((c["top1"] for c in self.curve if c.get("top1") is not None), default=None),
                         "wall_time_s": self.wall_time,
                         **({"ema": self.ema.module.state_dict()} if self.ema is not None else {})}, self.out)

    # ----------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        try:
            return self._loop()
        except OutputWriteError as err:  # the config, metrics, TensorBoard files: a full disk mid-run
            raise CheckpointError(f"{err}. {self._how_to_continue()}") from err

    def _how_to_continue(self) -> str:
        ckpt = self.folder.checkpoint
        if ckpt.exists():
            return (f"The run's last checkpoint {ckpt} is kept: once there is space, "
                    f"`{resume_command(self.out, self.dist)}` continues from it")
        if self.folder.config.exists():
            return ("No checkpoint was written yet: once there is space, `"
                    f"{resume_command(self.out, self.dist).replace(' --resume', ' --auto-resume')}` starts it again")
        return "No checkpoint was written yet: once there is space, run the same command again"

    def _loop(self) -> dict[str, Any]:
        if self.cfg.run.overwrite and self.dist.is_main:  # everything was checked and built: now the old run may go
            clear_earlier_outputs(self.out)
        writer = RunWriter(self.out, self.config, self.curve, enabled=self.dist.is_main, progress=self.cfg.run.progress)
        signals = self.signals = StopSignals()
        try:
            while self.epoch < self.cfg.optim.epochs:
                # A signal during eval/checkpointing stops here, at the epoch boundary, on every rank alike.
                stop_now = D.any_rank([signals.requested], self.device, self.dist)[0]
                if stop_now or not self._train_epoch(self.epoch + 1, signals, writer):
                    self._save()
                    cmd = resume_command(self.out, self.dist)
                    if self.dist.is_main:
                        print(f"\nStopped by {signals.name} at epoch {self.epoch + 1}, step {self.step}; "
                              f"checkpoint written to {self.folder.checkpoint}.\nResume with:\n  {cmd}",
                              flush=True)
                    return {"status": "interrupted", "signal": signals.name, "epoch": self.epoch, "step": self.step,
                            "resume_command": cmd}
            try:
                if self.dist.is_main:  # weights before results: a run is finished only once both exist
                    write_weights(self.model, self.out)
                    if self.ema is not None:
                        write_weights(self.ema.module, self.out, EMA_WEIGHTS_NAME)
                return writer.finish(self.curve, self.wall_time)
            except OutputWriteError as err:  # disk full or read-only at the very end: the checkpoint has everything
                raise CheckpointError(f"{err}. The run's last checkpoint {self.folder.checkpoint} is kept: once "
                                      f"it can be written, `{resume_command(self.out, self.dist)}` writes the final "
                                      "weights and results without training again") from err
        finally:
            signals.restore()
            writer.close()

    def _train_epoch(self, epoch: int, signals: "StopSignals", writer: RunWriter) -> bool:
        cfg = self.cfg
        if self.step == 0:  # a fresh epoch: every stream is a function of (seed, rank, epoch)
            self.generator.manual_seed(derive_seed(cfg.run.seed, self.dist.rank, epoch))
            torch.manual_seed(derive_seed(cfg.run.seed, self.dist.rank, epoch, 1))
            self.partial = {"loss_sum": 0.0, "images": 0, "time_s": 0.0}
        batches, total = self.batches.epoch(epoch, self.step)
        if self.step > total:  # a checkpoint's step beyond its epoch would end the epoch unseen, run "finished"
            raise CheckpointError(f"{self.folder.checkpoint}: entry step is {self.step}, but epoch {epoch} has "
                                  f"{total} steps; the checkpoint is damaged or was edited (or the data shrank). "
                                  "Resume from another copy, or start a fresh run with another --output-dir")
        # timm's --mixup-off-epoch: the last epochs train on plain images.
        self.mixing = self.mixer is not None and (cfg.optim.mix_off_epoch is None or epoch <= cfg.optim.mix_off_epoch)
        if cfg.run.max_steps_per_epoch:
            total = min(total, cfg.run.max_steps_per_epoch)
        self.ddp.train()
        bar = writer.progress(total=total, initial=self.step, desc=f"epoch {epoch}/{cfg.optim.epochs}")
        self._log = lambda loss, images_per_s: writer.log_point(epoch, self.step, total, loss, images_per_s)
        start = time.perf_counter()
        window = (self.step, self.partial["images"], start)
        first = self.step + 1  # a log point after the first step too: the loss shows at once, not after log_every
        for batch in batches:
            if self.step >= total:
                break
            self._step(batch)
            self.step += 1
            bar.update(1)
            stop = signals.requested if not self.dist.enabled else False
            if self.step % cfg.run.log_every == 0 or self.step >= total or self.step == first:
                stop = self._sync(epoch, bar, window, signals)
                window = (self.step, self.partial["images"], time.perf_counter())
            if stop:
                if self.step % cfg.run.log_every and self.step < total:
                    self._sync(epoch, bar, window, signals)
                self.partial["time_s"] += time.perf_counter() - start
                bar.close()
                return False
        bar.close()
        self._sync(epoch, bar, window, signals)
        self.partial["time_s"] += time.perf_counter() - start
        self._end_epoch(epoch, writer)
        return True

    def _sync(self, epoch: int, bar: Any, window: tuple[int, int, float], signals: "StopSignals") -> bool:
        """The log point: read the device accumulators, stop on a non-finite step; True if a signal asks to stop."""
        loss_sum, first_bad = torch.stack([self._loss_acc, self._first_bad.double()]).tolist()
        self._loss_acc.zero_()
        stop, bad = D.any_rank([signals.requested, first_bad >= 0], self.device, self.dist)
        if bad:
            where = f"step {int(first_bad)}" if first_bad >= 0 else "a step of another rank"
            raise NonFiniteLossError(
                f"non-finite loss or gradients at epoch {epoch}, {where}; that update was skipped, training stopped "
                f"and the last good checkpoint (if any) in {self.out} was kept. Likely causes: a learning rate too "
                f"high (try a lower --lr), fp16 overflow (try --amp bf16 or --amp off), or NaN/Inf in the input data.")
        self.partial["loss_sum"] += loss_sum
        images = self.partial["images"] - window[1]
        if images:
            bar.set_postfix(loss=f"{loss_sum / images:.3f}")
            self._log(loss_sum / images, images / max(time.perf_counter() - window[2], 1e-9))
        return stop

    def _step(self, batch: tuple[torch.Tensor, ...]) -> None:
        cfg, device = self.cfg, self.device
        images, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        attention = batch[2].to(device, non_blocking=True).float() if len(batch) > 2 else None
        if self.mixing:
            if self.mixer.guidance_source == "model":  # maps of the model being trained, on the unmixed batch
                attention = self._model_guidance(images, labels)
            images, targets = self.mixer(images, labels, attention, generator=self.generator)
        x = self._model_input(images)
        with _autocast(device, cfg.run.amp):
            logits = self.step_model(x)
        if not self.mixing:  # the mixers check labels themselves; cross_entropy's own error is a raw traceback
            _check_labels(labels, logits.shape[1])
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.optim.label_smoothing)
        else:
            loss = F.cross_entropy(logits.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss_bad = ~torch.isfinite(loss.detach())
        if self.scaler.is_enabled():  # fp16: the scaler skips overflowing updates itself
            self.scaler.scale(loss).backward()
            if cfg.optim.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
                self._clip_grad()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            bad = loss_bad
        else:
            loss.backward()
            if cfg.optim.clip_grad is not None:
                self._clip_grad()
            bad = self._skip_if_non_finite(loss_bad)
        if self.ema is not None:
            self.ema.update(self.model)
        n = images.shape[0]
        self._loss_acc += loss.detach().double() * n
        self._first_bad.copy_(torch.where(bad & (self._first_bad < 0), self.step + 1, self._first_bad))
        self.partial["images"] += n

    def _model_input(self, images: torch.Tensor) -> torch.Tensor:
        x = _normalize(images, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _model_guidance(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The guide maps of the raw local model (not the DDP or compiled wrapper) for the unmixed batch, as the
        model sees it: one extra forward, no grad, eval mode, under the run's autocast; it changes no state (no
        draw, no BatchNorm statistics), so a resumed run stays exact."""
        with _autocast(self.device, self.cfg.run.amp):
            return self.mixer.guide(self._model_input(images), labels, model=self.model)

    def _clip_grad(self) -> None:
        # A non-finite norm leaves the gradients non-finite, so the step is still skipped below (no host sync here).
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad, foreach=True)

    def _skip_if_non_finite(self, loss_bad: torch.Tensor) -> torch.Tensor:
        """Step the optimiser unless the loss or a gradient is NaN/Inf, deciding on the device (as GradScaler does)."""
        found = self._found_inf.zero_()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, self._one)
        found.copy_(torch.maximum(found, loss_bad.float()))
        if self.fused:  # fused optimisers read found_inf and leave every parameter untouched when it is 1
            self.optimizer.found_inf = found
            self.optimizer.step()
        elif not bool(found):  # other optimisers: a host sync, the only one in their step
            self.optimizer.step()
        return found > 0

    def _evaluate(self, *, train: bool = False, model: torch.nn.Module | None = None) -> dict[str, float]:
        """Metrics of the un-augmented held-out split (``train=True``: of the training split), over every rank;
        ``model``: another model than the run's (the EMA weights)."""
        sums = evaluation_sums(model or self.model, self.batches.evaluation(train=train), self.info, self.device,
                               amp=self.cfg.run.amp, channels_last=self.channels_last)
        return _metrics(D.all_reduce_sum(sums, self.device, self.dist))

    def _end_epoch(self, epoch: int, writer: RunWriter) -> None:
        cfg = self.cfg
        self._check_weights_finite(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        loss_sum, images, seconds = D.all_reduce_sum(
            [self.partial["loss_sum"], self.partial["images"], self.partial["time_s"]], self.device, self.dist)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / max(images, 1), "top1": None, "top5": None,
                               "eval_loss": None, "images_per_s": images / max(seconds / self.dist.world_size, 1e-9),
                               "lr": lr}
        eval_start = time.perf_counter()
        if self.batches.has_eval and (epoch % cfg.run.eval_every == 0 or epoch == cfg.optim.epochs):
            D.broadcast_buffers(self.model, self.dist)
            m = self._evaluate()
            row.update(top1=m["top1"], top5=m["top5"], eval_loss=m["loss"])
            if self.ema is not None:
                m = self._evaluate(model=self.ema.module)
                row.update(ema_top1=m["top1"], ema_top5=m["top5"], ema_eval_loss=m["loss"])
            if cfg.run.eval_train:
                m = self._evaluate(train=True)
                row.update(train_top1=m["top1"], train_eval_loss=m["loss"])
        best = max((c["top1"] for c in self.curve if c.get("top1") is not None), default=None)
        if self.dist.is_main and row["top1"] is not None and (best is None or row["top1"] > best):
            # Before the checkpoint: a run stopped in between redoes this epoch on resume and writes it again.
            write_weights(self.model, self.out, BEST_WEIGHTS_NAME)
        self.scheduler.step()
        self.epoch, self.step = epoch, 0
        row["time_s"] = seconds / self.dist.world_size + time.perf_counter() - eval_start
        self.wall_time += row["time_s"]
        self.curve.append(row)
        writer.log_epoch(row)
        self._save()


__all__ = ["train", "evaluate", "evaluation_sums", "NonFiniteLossError", "WEIGHTS_NAME", "EMA_WEIGHTS_NAME",
           "BEST_WEIGHTS_NAME"]
