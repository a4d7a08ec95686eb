"""What a click asks of the Predictor beyond its points: one frozen :class:`PredictOptions`.

    prediction = predictor.predict(points, options=PredictOptions(kind_gate=0.0, grow=False))

Everything here is prompt-time: changing it never re-embeds the image (the model grid's spacing and
the sliding window are ``Predictor(...)`` arguments, fixed at ``set_image``). The options are built
in one place per caller: :meth:`PredictOptions.from_cli` from the ``miqsam`` flags,
:meth:`PredictOptions.from_widget` from the widget's check boxes. The defaults are the shipped
settings, each chosen on validation phantoms (docs/experiments.md, "Inference settings").

No torch here: the widget's session imports this module and stays torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

KIND_GATE = 0.5  # the best of 0-0.8 on validation phantoms (docs/experiments.md, "Inference settings")
SNAP_RADIUS = 1  # cells; a click just off a lesion moves onto it (docs/experiments.md, "Click snapping")
MASK_LEVEL = 0.0  # logit level of a mask's edge: probability 0.5 (docs/experiments.md, "The mask level")
RESCUE = 0.0  # off: within noise out of family, less precise in family (docs/experiments.md, "Exemplar-relative rescue")
CONTRAST_RATIO = 1.6  # the rescue's ratio when it is asked for: the best of 1.3-2.5 on validation sets

#: Predictor attributes and CLI flags that are gone, and why (an old script gets this as its error).
REMOVED = {
    "kind_scoring": "kind scoring measured no better than a lower threshold (docs/experiments.md, "
                    "'Inference settings': Kind scoring)",
    "split_by_query": "splitting pieces by winning query cut lesions in two (docs/experiments.md, "
                      "'Inference settings': One instance per connected piece)",
}


@dataclass(frozen=True)
class PredictOptions:
    """How :meth:`Predictor.predict` turns the network's answer into instances.

    kind_gate: the kind gate, *only the clicked kind*. With a kind head, a piece whose lesion-kind agreement with
        the clicked piece (``postprocess.kind_consistency``) is below this is dropped; the clicked
        piece always stays. In [0, 1]; 0: every kind is kept (the widget's check box off).
    grow: *Grow small masks to edges*. Each instance of at most ``GROW_MAX_CELLS`` stride-2 cells
        is grown out to the image's half-contrast edge (``inference/grow.py``), from the refiner's
        masks or, with ``refine`` off or weights without a refiner, from the upsampled stride-2 masks.
    refine: with a mask refiner in the weights (``model/refine.py``), each instance's mask is
        redrawn at stride 1 from the model-grid image; False: the upsampled stride-2 masks.
    kind: the lesion kind to look for, as an index into the weights' lesion kinds (training maps
        label 2 to kind 0 and label 3 to kind 1: tumour and cyst in KiTS labels), used in place of
        the kind the model reads at the clicks (it biases the masks and decides the kind gate);
        None: read it. For scripts that know what they look for (docs/experiments.md).
    rescue: a piece the kind gate would drop is kept when its contrast to its surroundings has the
        clicked piece's sign and lies within this factor of it (``inference/rescue.py``: the
        kind head's two trained kinds can split one real kind in two); 0: never (the gate alone).
        0 or at least 1; off by default (measured within noise on the out-of-family yardstick);
        ``CONTRAST_RATIO`` is the ratio chosen on validation sets, for those who turn it on.
    snap_radius: a positive click whose cell reads background moves to the most lesion-like cell
        within this many stride-2 cells (``model.kind.snap_to_lesion``); 0: never.
    mask_level: the mask logit at an instance's edge in the original grid (0: probability 0.5;
        below 0: larger masks), ``postprocess.to_original_grid``.
    """

    kind_gate: float = KIND_GATE
    grow: bool = True
    refine: bool = True
    kind: int | None = None
    snap_radius: int = SNAP_RADIUS
    mask_level: float = MASK_LEVEL
    rescue: float = RESCUE

    def __post_init__(self) -> None:
        if isinstance(self.kind_gate, bool) or not isinstance(self.kind_gate, (int, float)) \
                or not 0.0 <= float(self.kind_gate) <= 1.0:
            raise InputError(f"kind_gate must lie in [0, 1] (0: keep every kind), got {self.kind_gate!r}")
        if self.kind is not None and (isinstance(self.kind, bool) or not _is_int(self.kind) or self.kind < 0):
            raise InputError(f"kind must be None or a lesion-kind index (0, 1, ...), got {self.kind!r}")
        if isinstance(self.snap_radius, bool) or not _is_int(self.snap_radius) or self.snap_radius < 0:
            raise InputError(f"snap_radius must be a whole number of cells >= 0, got {self.snap_radius!r}")
        if not isinstance(self.mask_level, (int, float)) or not math.isfinite(self.mask_level):
            raise InputError(f"mask_level must be a finite logit, got {self.mask_level!r}")
        if isinstance(self.rescue, bool) or not isinstance(self.rescue, (int, float)) \
                or not (self.rescue == 0 or 1.0 <= self.rescue < math.inf):
            raise InputError(f"rescue must be 0 (off) or a contrast ratio >= 1, got {self.rescue!r}")
        # plain Python numbers, so equal options compare (and hash) equal whatever the caller passed
        object.__setattr__(self, "kind_gate", float(self.kind_gate))
        object.__setattr__(self, "grow", bool(self.grow))
        object.__setattr__(self, "refine", bool(self.refine))
        object.__setattr__(self, "kind", None if self.kind is None else int(self.kind))
        object.__setattr__(self, "snap_radius", int(self.snap_radius))
        object.__setattr__(self, "mask_level", float(self.mask_level))
        object.__setattr__(self, "rescue", float(self.rescue))

    @classmethod
    def from_cli(cls, args: Any, kind: int | None = None) -> "PredictOptions":
        """From parsed ``miqsam`` flags (``commands.add_predict_options``): ``--kind-gate``,
        ``--rescue``, ``--no-grow``, ``--no-refine``, each optional on a command; ``kind``: ``--kind`` resolved
        against the weights' kind names by the caller (``commands.predict.kind_index``)."""
        gate = getattr(args, "kind_gate", None)
        gate = KIND_GATE if gate is None else gate
        if not 0.0 <= gate <= 1.0:
            raise InputError(f"--kind-gate must lie in [0, 1] (0: keep every kind), got {gate}")
        rescue = getattr(args, "rescue", None)
        rescue = RESCUE if rescue is None else rescue
        if not (rescue == 0 or rescue >= 1):
            raise InputError(f"--rescue must be 0 (never) or a contrast ratio >= 1, got {rescue}")
        return cls(kind_gate=gate, grow=not getattr(args, "no_grow", False),
                   refine=not getattr(args, "no_refine", False), kind=kind, rescue=rescue)

    @classmethod
    def from_widget(cls, *, kind_gate: bool = True, grow: bool = True) -> "PredictOptions":
        """From the widget's check boxes: *Kind gate: only the clicked kind* on is the gate at its
        default (``KIND_GATE``), off is 0; *Grow small masks to edges* is ``grow``."""
        return cls(kind_gate=KIND_GATE if kind_gate else 0.0, grow=grow)


def _is_int(value: Any) -> bool:
    try:
        return int(value) == value
    except (TypeError, ValueError):
        return False
