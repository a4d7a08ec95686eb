"""Adapt: a short fine-tune of existing weights on the user's own labelled volumes, on a CPU.

``adapt(data, base, out)`` runs the training loop (``loop.train``) from ``base`` on the data set
folder ``data`` (``data.user_dataset`` collects one; any LiTS / KiTS / MSD folder works), with clicks
simulated on the user's lesions as in training, for a number of steps (by default
:data:`STEPS_PER_VOLUME` per labelled volume; an optional time limit can end it sooner). By default only the
prompt side learns (query generator, decoder, instance heads: ``train="decoder"``): the encoder
stays frozen, so a step skips its backward pass and a few labelled volumes cannot overwrite what it
learnt from thousands of phantoms; ``train="all"`` trains the encoder too. The mask refiner stays
frozen as in the loop's main stage.

Keeping the user safe:

* the output is a new file: never the shipped weights (nor their folder), never ``base``; an
  existing file is replaced only with ``overwrite=True``;
* training writes into a hidden run folder beside the output, and the weights are moved into place
  only at the end of a successful run: a cancel (``cancel()`` returns True, checked every step), an
  error or a full disk leaves no weights file;
* a lock file ``OUT.lock`` refuses a second adaptation into the same output while one runs;
* with two or more labelled volumes the last one(s) are held out (not trained on) and both the base
  and the new weights are scored on them with the project's evaluation (``evaluation.evaluate``);
  the card ``OUT.json`` records base (path, sha256), data set, cases, steps, minutes and scores.

For a GUI: run it in another process (``training.adapt_job.AdaptJob``) and pass ``progress`` /
``cancel`` callables; nothing here imports napari.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..errors import CancelledError, InputError, ReadError, WeightsError, WriteError

__all__ = ["ADAPT_DEFAULTS", "STEPS_PER_VOLUME", "TRAIN_MODES", "AdaptResult", "adapt", "available_cores",
           "check_output", "default_steps"]

#: What ``train`` may be: the prompt side only (encoder frozen), or the whole network.
TRAIN_MODES = ("decoder", "all")
#: Training settings of an adaptation: those of the base's last fine-tuning stages (one 128-voxel
#: patch per step, learning rate 1e-4 after a short warm-up; weights/miqsam_cpu.json).
ADAPT_DEFAULTS = {"batch": 1, "patch": 128, "lr": 1e-4, "warmup": 10, "pool": 16}
#: The default budget: this many steps per labelled volume trained on (``steps=0``). A step count, not
#: minutes, because the curve (docs/results.md, "Adaptation curve") is one of steps: on out-of-family
#: phantoms 48 whole-network steps on 4 volumes (12 a volume) raised Dice 0.50 -> 0.59, longer runs gave
#: some of it back, and 794 decoder steps on one volume (what the old default of 5 minutes had become on
#: 2 cores) lowered Dice 0.50 -> 0.37 and F1 0.44 -> 0.32. A time budget would also mean ten times more
#: steps on a GPU than on a laptop.
STEPS_PER_VOLUME = 12
NEVER = 10**9  # checkpoint_every: no checkpoint (the weights are written once, at the end)
HEADLINE = "instance_f1"

ProgressFn = Callable[[int, "int | None", float], None]


@dataclass
class AdaptResult:
    """What an adaptation made.

    Attributes:
        weights: the new weights file; card: its JSON card beside it.
        base: the weights it started from; data: the data set folder.
        train: ``"decoder"`` or ``"all"``; steps, minutes: training done.
        cases: names of the cases trained on; held_out: names of those scored, not trained on.
        before, after: mean scores (``evaluation.evaluate``'s ``model`` summary: dice, instance_f1,
            ...) of ``base`` and of the new weights on ``held_out``; None without a held-out check.
    """

    weights: Path
    card: Path
    base: Path
    data: Path
    train: str
    steps: int
    minutes: float
    cases: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)
    before: dict | None = None
    after: dict | None = None

    def summary(self) -> str:
        """One line for a person, e.g. ``instance F1 0.41 -> 0.63 on 1 held-out volume``."""
        return held_out_summary(self.before, self.after, len(self.held_out), len(self.cases) + len(self.held_out))


def default_steps(trained_volumes: int) -> int:
    """The default budget for ``trained_volumes`` labelled volumes: :data:`STEPS_PER_VOLUME` each."""
    return STEPS_PER_VOLUME * max(1, int(trained_volumes))


#: below this held-out Dice the starting weights "find almost nothing": the images are of a kind they
#: were not made from, where the whole network needs ~1000 steps (benchmarks/nuclei_probe.py), not the
#: few per volume that suit a family the weights already know
NEW_KIND_DICE = 0.05
LEARNED_F1 = 0.5  # ... unless adapting already brought the held-out instance F1 this far


def held_out_summary(before: dict | None, after: dict | None, n_held: int, n_cases: int) -> str:
    if not n_held:
        return (f"no held-out check was possible: {n_cases} labelled volume{'s' * (n_cases != 1)}, "
                "at least two are needed (one to train on, one to score)")
    if not before or not after or not before.get("n_rows"):
        return f"no held-out score: the {n_held} held-out volume{'s' * (n_held != 1)} had no lesion to click"
    vol = f"{n_held} held-out volume{'s' * (n_held != 1)}"
    text = (f"instance F1 {before[HEADLINE]:.2f} -> {after[HEADLINE]:.2f}, "
            f"Dice {before['dice']:.2f} -> {after['dice']:.2f} on {vol}")
    if before["dice"] < NEW_KIND_DICE and after[HEADLINE] < LEARNED_F1:
        text += (". The starting weights found almost nothing here: images unlike the ones they were made from "
                 "(e.g. microscopy) need the whole network trained for about 1000 steps (docs/results.md)")
    return text


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _resolve_base(base: str | Path) -> Path:
    from ..model.weights import DEFAULT_WEIGHTS

    path = DEFAULT_WEIGHTS if str(base) == "default" else Path(base).expanduser()
    if not path.is_file():
        raise WeightsError(f"base weights not found: {path}")
    return path.resolve()


def check_output(out: str | Path, base: Path, overwrite: bool = False) -> Path:
    """The output weights path, resolved; WriteError when it would overwrite the shipped weights (or
    anything in their folder), the base weights, or an existing file without ``overwrite``."""
    from ..model.weights import DEFAULT_WEIGHTS

    out = Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise InputError(f"{out}: the adapted weights are a .safetensors file; name the output NAME.safetensors")
    out = out.parent.resolve() / out.name
    shipped = DEFAULT_WEIGHTS.resolve().parent
    if out.parent == shipped or out == DEFAULT_WEIGHTS.resolve():
        raise WriteError(f"{out}: adapted weights never go into the shipped weights folder ({shipped}); "
                         "choose another output (default: the user weights folder)")
    if out == base or (out.exists() and os.path.samefile(out, base)):
        raise WriteError(f"{out}: this is the base weights file; adapted weights are always a new file")
    if out.exists() and not overwrite:
        raise WriteError(f"{out}: the file exists; choose another name or allow overwriting")
    if out.is_dir():
        raise WriteError(f"{out}: is a folder")
    return out


class OutputLock:
    """``OUT.lock`` beside the output, made exclusively (O_EXCL) and holding our pid: a second
    adaptation into the same output is refused. A lock whose process is gone (a crash) is taken over."""

    def __init__(self, out: Path):
        self.path = out.with_name(out.name + ".lock")
        self.held = False

    def __enter__(self) -> "OutputLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._stale():
                    _unlink_quiet(self.path)
                    continue
                raise WriteError(f"{self.path.with_suffix('')}: another adaptation into this file is running "
                                 f"(lock {self.path}); wait for it, or choose another output") from None
            except OSError as exc:
                raise WriteError(f"{self.path.parent}: cannot write there ({exc.strerror or exc})") from exc
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self.held = True
            return self
        raise WriteError(f"{self.path}: could not take the lock")

    def _stale(self) -> bool:
        try:
            pid = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return False  # being written, or unreadable: not ours to remove
        if pid <= 0 or os.name != "posix":  # os.kill(pid, 0) would end the process on Windows
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def __exit__(self, *exc) -> None:
        if self.held:
            _unlink_quiet(self.path)
            self.held = False


def _unlink_quiet(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def _train_options_config(meta: dict) -> tuple[str, dict]:
    """(preset name, overrides) that ``get_config`` turns into the base's own config."""
    from ..model.config import PRESETS, MIQSAMConfig, get_config

    cfg = MIQSAMConfig.from_dict(json.loads(meta["config"]))
    if cfg.name not in PRESETS:
        raise WeightsError(f"the base weights' config {cfg.name!r} is not a preset ({', '.join(PRESETS)})")
    preset = PRESETS[cfg.name]
    overrides = {f.name: getattr(cfg, f.name) for f in fields(cfg) if getattr(cfg, f.name) != getattr(preset, f.name)}
    if get_config(cfg.name, **overrides) != cfg:
        raise WeightsError(f"the base weights' config cannot be rebuilt from the {cfg.name!r} preset")
    return cfg.name, overrides


def _score(refs: list, weights: Path, classes: tuple, device: str, clicks: int, seed: int) -> dict:
    from ..evaluation.evaluate import evaluate
    from ..inference.predictor import Predictor

    res = evaluate(refs, Predictor.from_weights(weights, device=device), clicks=clicks, seed=seed, progress=False,
                   baselines=False, lesion_classes=classes)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in res["model"].items()}


def adapt(
    data: str | Path,
    base: str | Path,
    out: str | Path,
    minutes: float = 0.0,
    train: str = "decoder",
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
    *,
    steps: int = 0,
    held_out: int = 1,
    threads: int = 0,
    device: str = "cpu",
    seed: int = 0,
    clicks: int = 3,
    overwrite: bool = False,
    batch: int = ADAPT_DEFAULTS["batch"],
    patch: int = ADAPT_DEFAULTS["patch"],
    lr: float = ADAPT_DEFAULTS["lr"],
    log: Callable[[str], None] = print,
) -> AdaptResult:
    """Fine-tune ``base`` on the labelled volumes of ``data`` into the new file ``out``.

    Args:
        data: a data set folder (KiTS layout from ``data.user_dataset``, or LiTS / MSD).
        base: the weights to start from (``"default"``: the shipped ones); their config is used.
        out: the new ``.safetensors`` file (``user_weights.new_weights_path()`` for a fresh name).
        minutes: a time limit on the training (0: none); preparing the cases and the held-out
            scoring come on top.
        train: ``"decoder"`` (encoder frozen) or ``"all"``.
        progress: ``progress(step, total_steps, minutes_elapsed)`` after every step.
        cancel: checked before and after every step; True stops and writes no weights file.
        steps: the number of steps (0: :func:`default_steps` of the volumes trained on, 12 each);
            training ends after them or at the time limit, whichever comes first.
        held_out: volumes held out for the before/after check, at most all but one (0: none).
        threads: torch CPU threads (0: every available core); device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        clicks: simulated clicks per held-out (volume, lesion kind) in the check.
        overwrite: allow replacing an existing ``out`` (never the shipped or base weights).
        log: receives one line per phase.

    Raises:
        ReadError: an empty or unreadable data set; WeightsError: bad base weights; InputError: bad
        options; WriteError: an output that would overwrite shipped or base weights, an existing
        file, a folder without write permission, a full disk, a second adaptation into ``out``;
        CancelledError: ``cancel()`` returned True (no weights file is left).
    """
    import torch

    from ..data.datasets import list_cases
    from ..model.weights import read_metadata, update_metadata
    from ..user_weights import card_path
    from .loop import TrainOptions
    from .loop import train as train_loop
    from .sources import lesion_labels

    if train not in TRAIN_MODES:
        raise InputError(f"train must be one of {', '.join(TRAIN_MODES)}, got {train!r}")
    if not (math.isfinite(minutes) and minutes >= 0) or steps < 0:
        raise InputError(f"minutes and steps must be >= 0 (0: no time limit; the default number of steps), "
                         f"got minutes={minutes}, steps={steps}")
    if held_out < 0 or clicks < 1:
        raise InputError(f"held_out must be >= 0 and clicks >= 1, got {held_out} and {clicks}")
    cancelled = cancel or (lambda: False)
    data = Path(data).expanduser()
    if not data.is_dir():
        raise ReadError(f"{data}: no such data set folder; add labelled volumes first (miqsam collect, or the widget)")
    try:
        refs = list_cases(data)
    except ReadError as exc:
        raise ReadError(f"{data}: no labelled volume to adapt to ({exc}); add some first "
                        "(miqsam collect, or the widget)") from None
    base = _resolve_base(base)
    meta = read_metadata(base)
    if "config" not in meta:
        raise WeightsError(f"{base} has no napari-miqsam config in its metadata; it was not made by this project")
    config, overrides = _train_options_config(meta)
    out = check_output(out, base, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"{out.parent}: cannot create the output folder ({exc.strerror or exc})") from exc
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise WriteError(f"{out.parent}: the folder is not writable; choose another output")

    n_held = min(held_out, len(refs) - 1) if len(refs) >= 2 else 0
    held = refs[len(refs) - n_held:] if n_held else []
    trained = [r.name for r in refs[:len(refs) - n_held]]
    steps = int(steps) or default_steps(len(trained))
    base_sha = file_sha256(base)
    old_threads = torch.get_num_threads()
    run_dir = out.parent / f".{out.stem}.adapt-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with OutputLock(out):
        try:
            run_dir.mkdir()
            classes = lesion_labels(str(data), "auto", json.loads(meta["config"]).get("kinds", 2))
            before = None
            if held:
                log(f"scoring the base weights on {len(held)} held-out volume(s): {', '.join(r.name for r in held)}")
                before = _score(held, base, classes, device, clicks, seed)
            else:
                log(held_out_summary(None, None, 0, len(refs)))
            if cancelled():
                raise CancelledError("adaptation cancelled before training; no weights were written")

            def on_step(step: int, elapsed: float) -> None:
                if progress is not None:
                    progress(step, steps, elapsed / 60)
                if cancelled():
                    raise CancelledError(f"adaptation cancelled after {step} steps; no weights were written")

            opt = TrainOptions(
                config=config, ablation=overrides, data=str(data), out=str(run_dir), init=str(base),
                steps=steps, minutes=float(minutes), batch=batch, patch=patch, lr=lr,
                warmup=min(ADAPT_DEFAULTS["warmup"], max(1, steps // 5)),
                pool=min(ADAPT_DEFAULTS["pool"], len(trained)), seed=seed, device=device,
                threads=threads or available_cores(), checkpoint_every=NEVER,
                freeze_encoder=train == "decoder", exclude_cases=tuple(r.name for r in held))
            log(f"adapting {base.name} ({train}{' with the encoder frozen' if train == 'decoder' else ''}) on "
                f"{len(trained)} volume(s) for {steps} steps" + (f" or {minutes:g} min, whichever ends first" if minutes else ""))
            # the loop's last line names its temporary file: say "trained" instead
            result = train_loop(opt, log=lambda m: log("trained" + m[m.find(" after "):] if m.startswith("wrote ") else m),
                                on_step=on_step)
            tmp_weights = result.weights
            card = {
                "name": out.stem, "weights": out.name, "made": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "base": {"path": str(base), "sha256": base_sha}, "data": str(data.resolve()),
                "cases": trained, "held_out_cases": [r.name for r in held], "train": train,
                "steps": result.steps, "minutes": round(result.minutes, 2), "budget_minutes": minutes, "budget_steps": steps,
                "settings": {"batch": batch, "patch": patch, "lr": lr, "threads": opt.threads, "device": device,
                             "seed": seed, "lesion_labels": list(classes)},
            }
            carry = {k: meta[k] for k in ("inference_spacing",) if k in meta}
            update_metadata(tmp_weights, {**carry, "adapted_from": str(base), "base_sha256": base_sha,
                                          "adapt": json.dumps({k: card[k] for k in ("train", "steps", "cases", "held_out_cases")})})
            after = None
            if held:
                if cancelled():
                    raise CancelledError("adaptation cancelled before the held-out check; no weights were written")
                log("scoring the adapted weights on the held-out volume(s)")
                after = _score(held, tmp_weights, classes, device, clicks, seed)
            res = AdaptResult(out, card_path(out), base, data, train, result.steps, result.minutes, trained,
                              [r.name for r in held], before, after)
            card["held_out_check"] = {"before": before, "after": after, "clicks": clicks, "seed": seed,
                                      "summary": res.summary()}
            _write_card(res.card, card)
            try:
                os.replace(tmp_weights, out)  # the weights appear only now, whole
            except OSError:
                _unlink_quiet(res.card)
                raise
            log(f"wrote {out} and its card {res.card.name}")
            return res
        except OSError as exc:
            if isinstance(exc, WriteError):
                raise
            why = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise WriteError(f"{out}: could not write the adapted weights ({why}); nothing was written") from exc
        finally:
            torch.set_num_threads(old_threads)
            shutil.rmtree(run_dir, ignore_errors=True)


def _write_card(path: Path, card: dict) -> None:
    from ..data.io import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(card, fh, indent=1)
    atomic_write(path, write, overwrite=True)

