"""Re-evaluate trained runs: load a run folder's weights and measure them on its own held-out split or on other data.

Every finished run leaves ``results.json`` (its config and final numbers) and fp16 ``weights.safetensors``; grids
commit both. This is how a reader checks those numbers on a fresh machine, or measures the same models on data they
were never evaluated on (e.g. the CIFAR-10 test set, or a corrupted copy of it).
"""
from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..constants import EVAL_SPLITS, EVAL_WEIGHTS
from ..data import build_datasets
from ..data.loader import worker_safe_loader
from ..models import create_model
from ..serialization import load_state_dict_file, load_weights_into, non_finite_entries
from ..training.checkpoint import load_checkpoint
from ..training.config import DATA_FIELDS, check_rebuildable
from ..training.data_setup import unaugmented
from ..training.run_folder import CHECKPOINT_NAME, RESULTS_NAME, RunFolder
from ..training.run_record import FINISHED, RecordedConfig, RunRecord
from ..training.trainer import evaluate

DATA_KEYS = DATA_FIELDS  # the data section's options: what a run's held-out split is
SPLITS, WEIGHTS = EVAL_SPLITS, EVAL_WEIGHTS


def _run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders; a grid's output folder (one holding ``runs/``) stands for its runs."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"run folder not found: {p}")
        if (p / "runs").is_dir():  # a grid (it has its own results of all cells); a run folder has no runs/
            cells = sorted(d for d in (p / "runs").iterdir() if d.is_dir())
            runs = [d for d in cells if RunFolder(d).results.is_file()]
            if not runs:
                raise FileNotFoundError(f"{p / 'runs'} holds no finished run (no */{RESULTS_NAME})")
            if unfinished := [d.name for d in cells if d not in runs]:
                # Said, not silently dropped: a table of 13 rows must not pass for the whole grid.
                warnings.warn(f"{p / 'runs'}: skipped {len(unfinished)} unfinished run(s) (no {RESULTS_NAME}): "
                              f"{', '.join(unfinished)}; to measure one mid-training, give its folder with "
                              "--weights checkpoint", stacklevel=3)
            out.extend(runs)
        elif RunFolder(p).results.is_file() or RunFolder(p).checkpoint.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} holds neither {RESULTS_NAME} nor {CHECKPOINT_NAME} (nor a runs/ folder of "
                                    "them): give a folder written by `attentive-cutmix train` or `compare`")
    return out


def read_run(run_dir: str | os.PathLike) -> tuple[RecordedConfig, dict[str, Any]]:
    """``(config, recorded)``: the run's full config and the final numbers it logged (empty if unfinished).

    Relative paths in the config count from where the run was started (its recorded ``base_dir``), so a run is
    re-evaluated on its own data from any working directory; runs that record none count from the working one.
    """
    config, recorded = _read_record(RunFolder(run_dir))
    return config.resolved(run_dir), recorded


def _read_record(run: RunFolder) -> tuple[RecordedConfig, dict[str, Any]]:
    if run.results.is_file():
        try:
            record = RunRecord.read(run)
        except ValueError as err:
            again = (f"; `attentive-cutmix train --config {run.config} --resume` writes it again from the "
                     "checkpoint" if run.checkpoint.is_file() else "; re-run the training")
            raise ValueError(f"{err}{again}") from err
        finals = record.finals
        return record.config, {"top1": finals.top1, "top5": finals.top5, "loss": finals.eval_loss,
                               "train_top1": finals.train_top1}
    ckpt = load_checkpoint(run.checkpoint)
    if not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"{run.checkpoint} holds no config: not written by `attentive-cutmix train`")
    return RecordedConfig(ckpt["config"]), {}


def load_run_model(run_dir: str | os.PathLike, *, weights: str = "auto",
                   device: torch.device | str = "cpu") -> tuple[torch.nn.Module, RecordedConfig, Path]:
    """``(model in eval mode, config, weights file)`` for a run folder.

    ``weights``: ``final`` (``weights.safetensors``, fp16, written when the run finished), ``checkpoint``
    (``checkpoint.pt``, fp32, the last saved epoch) or ``auto`` (the first of them that exists).
    """
    config, _ = read_run(run_dir)
    model, path = _model(Path(run_dir), config, weights, device)
    return model, config, path


def _model(run: Path, config: RecordedConfig, weights: str,
           device: torch.device | str) -> tuple[torch.nn.Module, Path]:
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got weights={weights!r}")
    folder = RunFolder(run)
    files = folder.weights_files(weights)
    status = folder.recorded_status()
    if weights == "auto" and status not in (None, FINISHED):
        # Being extended (or stopped while it was): the final weights are the old final epoch's, not the run's.
        files = files[::-1]
        warnings.warn(f"{run} is not finished ({folder.results.name}: status {status!r}); measuring its latest "
                      "checkpoint", stacklevel=4)
    path = next((f for f in files if f.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{run} has no {' or '.join(f.name for f in files)}; "
                                + ("the run did not finish: try weights='checkpoint'" if weights == "final"
                                   else "was it trained with this package?"))
    check_rebuildable(config, str(run))
    missing = config.missing_model_keys()
    if missing:
        raise ValueError(f"{run}'s config lacks {missing}: written by an older version? re-run the training")
    model = create_model(config.model, num_classes=config.num_classes, image_size=config.image_size)
    state = load_state_dict_file(path)
    if bad := non_finite_entries(state):
        # A NaN weight gives plausible-looking numbers (every prediction one class): say so beside them.
        warnings.warn(f"{path}: {len(bad)} weight tensor(s) hold NaN/Inf ({', '.join(bad[:3])}); the numbers "
                      "measured with these weights are meaningless: retrain, or evaluate another checkpoint",
                      stacklevel=3)
    load_weights_into(model, state, source=str(path))
    return model.to(device).eval(), path


def data_spec(config: Mapping[str, Any], data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What to evaluate on: the run's own data, with ``data`` overriding it option by option, or, when ``data``
    names a ``dataset``, that data alone as ``train`` would build it.

    So ``data_dir`` alone moves the run's folder (same split), while a named dataset does not inherit the run's
    split options (a CIFAR test set must not be split because the run held out 10% of its folder). An image folder
    named without ``val_fraction``/``val_data`` is evaluated whole.
    """
    data = {k: v for k, v in (data or {}).items() if v is not None}
    unknown = sorted(set(data) - set(DATA_KEYS))
    if unknown:
        raise ValueError(f"unknown data options {unknown}; valid: {', '.join(DATA_KEYS)}")
    if "dataset" not in data:
        return {**{k: config.get(k) for k in DATA_KEYS}, **data}
    spec = {"image_size": config.get("image_size"), **data}
    if (spec["dataset"] == "imagefolder" and not spec.get("val_fraction") and spec.get("val_data") is None
            and spec.get("data_dir") is not None):
        spec["val_data"] = spec["data_dir"]  # the whole folder is the evaluation set
    return spec


def own_split(data: Mapping[str, Any] | None) -> bool:
    """Whether ``data_spec`` keeps the run's own split (then the training-split fingerprint must match)."""
    return "dataset" not in {k for k, v in (data or {}).items() if v is not None}


def _build(spec: Mapping[str, Any], split: str) -> tuple[Any, Any]:
    train_ds, eval_ds, info = build_datasets(
        spec["dataset"], data_dir=spec.get("data_dir"), image_size=spec.get("image_size"),
        val_fraction=spec.get("val_fraction") or 0.0, val_data=spec.get("val_data"), seed=spec.get("split_seed") or 0,
        synthetic_size=spec.get("synthetic_size"), train_subset=spec.get("train_subset"))
    return (eval_ds if split == "eval" else unaugmented(train_ds, info)), info


def _check_classes(run: Path, trained: list[str] | None, found: list[str], spec: Mapping[str, Any]) -> None:
    """Label ``i`` must mean the same class to the model and the data; runs written before class names were
    recorded (no ``classes`` in their config) can only be checked by count."""
    if trained is None or list(trained) == list(found):
        return
    where = f"{spec['dataset']} {spec.get('data_dir') or ''}".strip()
    if sorted(trained) == sorted(found):
        i = next(i for i, (a, b) in enumerate(zip(trained, found)) if a != b)
        raise ValueError(f"{run} and {where} order their classes differently (label {i} is {trained[i]!r} to the "
                         f"run, {found[i]!r} to the data); evaluate on data whose label order is the run's: "
                         f"{', '.join(trained)}")
    raise ValueError(f"{run} was trained on classes {sorted(set(trained) - set(found))} that {where} lacks, and "
                     f"{where} has {sorted(set(found) - set(trained))} that the run never saw; name the class "
                     f"folders as the run did: {', '.join(trained)}")


def evaluate_runs(runs: Iterable[str | os.PathLike], *, data: Mapping[str, Any] | None = None, split: str = "eval",
                  weights: str = "auto", device: torch.device | str = "cpu", batch_size: int = 256,
                  workers: int = 0) -> list[dict[str, Any]]:
    """Evaluate each run (a run folder, or a grid folder holding ``runs/``); one result row per run.

    Rows hold top-1/top-5 (%), mean cross-entropy and the count, beside the numbers the run recorded. Inputs are
    normalised with the run's own mean/std, whatever the data. Datasets are built once per distinct spec.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got split={split!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got batch_size={batch_size!r}")
    device = torch.device(device)
    built: dict[str, tuple[Any, Any]] = {}
    runs = [(run, *read_run(run)) for run in _run_dirs(runs)]
    keys = [json.dumps(data_spec(config, data), sort_keys=True, default=str) for _, config, _ in runs]
    left = Counter(keys)  # runs still to measure on each dataset
    decoded: dict[str, list[Any]] = {}  # a dataset's batches, decoded once for the runs that share it (a grid's do)
    rows = []
    for (run, config, recorded), key in zip(runs, keys):
        model, path = _model(run, config, weights, device)
        spec = data_spec(config, data)
        if key not in built:
            built[key] = _build(spec, split)
        dataset, info = built[key]
        if info.num_classes != config.num_classes:
            raise ValueError(f"{run} predicts {config.num_classes} classes but {spec['dataset']} "
                             f"{spec.get('data_dir') or ''} has {info.num_classes}; evaluate on data with the same "
                             "classes (image folders: class folders sorted by name give the label order)")
        _check_classes(run, config.classes, info.classes, spec)
        own = own_split(data)
        matches = info.train_fingerprint == config.train_fingerprint if own else None
        if own and not matches:
            warnings.warn(f"{run}: the data at {spec.get('data_dir') or spec['dataset']} differs from what the run "
                          f"trained on (training-split fingerprint); its numbers are not comparable with its "
                          f"{RESULTS_NAME}",
                          stacklevel=2)
        changed = own and any(spec.get(k) != config.get(k) for k in DATA_KEYS if k != "data_dir")
        left[key] -= 1
        loader = decoded.pop(key, None) if not left[key] else decoded.get(key)
        if loader is None:
            loader = worker_safe_loader(dataset, workers=workers, batch_size=batch_size, shuffle=False)
            if left[key] and _fits_in_memory(dataset):
                loader = decoded[key] = list(loader)
        norm = SimpleNamespace(mean=config.mean, std=config.std)
        m = evaluate(model, loader, norm, device)
        rows.append({"run": str(run), "method": config.method, "seed": config.seed,
                     "weights": path.name, "split": split, "dataset": spec["dataset"],
                     "data_dir": spec.get("data_dir"), "own_data": own, "data_matches": matches, **m,
                     "recorded_top1": recorded.get("top1") if own and not changed and split == "eval" else None,
                     "recorded_loss": recorded.get("loss") if own and not changed and split == "eval" else None})
    return rows


def _fits_in_memory(dataset: Any, limit: int = 1 << 30) -> bool:
    """Whether the decoded images of ``dataset`` take at most ``limit`` bytes (judged by its first image)."""
    image = dataset[0][0] if len(dataset) else None
    return isinstance(image, torch.Tensor) and len(dataset) * image.numel() * image.element_size() <= limit


def rows_markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table of ``evaluate_runs`` rows."""
    def num(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    lines = ["| run | method | seed | weights | data | images | top-1 | top-5 | loss | recorded top-1 |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        where = f"{r['dataset']} {r['split']}" + ("" if r["own_data"] else f" ({r['data_dir'] or 'test split'})")
        lines.append(f"| {Path(r['run']).name} | {r['method']} | {r['seed']} | {r['weights']} | {where} | {r['count']} "
                     f"| {r['top1']:.2f} | {r['top5']:.2f} | {r['loss']:.4f} | {num(r['recorded_top1'], '.2f')} |")
    return "\n".join(lines) + "\n"


__all__ = ["DATA_KEYS", "SPLITS", "WEIGHTS", "read_run", "load_run_model", "data_spec", "own_split", "evaluate_runs",
           "rows_markdown"]
