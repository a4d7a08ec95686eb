"""The contrast probes of ``miqsam evaluate`` (``phantom-mirrored:N:SEED`` etc.).

Plain Python with no imports, so the command line can spell its data specs from it without loading
numpy or the phantom generators; ``data.datasets`` applies them.
"""

#: Label-preserving rewrites of a phantom's intensities, HU -> scale * HU + offset: does a network read
#: the lesion's contrast to its host, or the absolute CT numbers it was trained on? ``mirrored`` turns
#: every lesion brighter than its organ by the same margin (the window 40 +- 200 HU maps onto itself);
#: ``halved`` halves every contrast and lifts the organ to 100-145 HU. A model that has learned "lesions
#: like the clicked one" scores on them about as on the phantoms as made (docs/experiments.md,
#: fourteenth session: the shipped weights score Dice 0.000 and 0.183, 0.797 as made).
#: ``phantom-mirrored:N:SEED`` etc. in ``miqsam evaluate``.
CONTRAST_PROBES: dict[str, tuple[float, float]] = {"mirrored": (-1.0, 80.0), "halved": (0.5, 80.0)}
