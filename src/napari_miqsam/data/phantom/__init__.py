"""Synthetic abdominal CT phantoms with a labelled target organ, tumours and cysts.

The phantom is the project's stand-in for LiTS/KiTS when no real data is on disk: it is used to
train the shipped default weights, by the tests, by the napari sample data and by
``miqsam evaluate phantom:N:SEED``. It is built to look like a contrast-phase abdominal CT slab:

* air (-1000 HU) around an elliptic body; subcutaneous fat (~-100 HU); an abdominal-wall muscle
  ring (~50 HU); visceral fat (~-90 HU) inside;
* a vertebra column posteriorly (cortical bone 700-1100 HU, cancellous 150-300 HU, discs, canal,
  posterior arch, spinous process), paraspinal and psoas muscles, ribs (bright arcs descending
  anteriorly), aorta and IVC;
* kidneys (cortex / medulla), spleen, stomach (air-fluid level, sometimes oral contrast), bowel
  loops (wall, fluid, gas pockets), a gallbladder (a water-dense distractor outside the organ);
* the target organ (liver-like, lobulated, textured; 40-130 HU from non-contrast to portal venous
  phase) with a tree of tubular vessels (labelled organ) and 0-8 tumours (hypodense by 15-50 HU,
  lobulated, soft-edged, heterogeneous, sometimes a bright rim or a necrotic core) and 0-8 cysts
  (0-20 HU, round, sharp-edged); lesion diameters 4-60 mm, log-uniform; every lesion is its own
  26-connected component;
* partial-volume blur (anisotropic, from the spacing), correlated Gaussian noise (sigma 8-25 HU
  after blur), a smooth global intensity drift.

Labels follow KiTS: 0 background, 1 organ, 2 tumour, 3 cyst.

Everything is vectorised numpy/scipy and drawn from ``np.random.default_rng`` streams spawned
from the seed, so a case is reproducible; the anatomy is defined in "canonical millimetres" (a
field of view of 120 x 180 x 180 mm) and mapped onto the requested grid, so the same seed gives
the same patient at any spacing. Coordinates are (z, y, x): z increases superiorly, y posteriorly,
x towards the patient's left (radiological display: the organ shows on the image's left).

Modules: :mod:`.case` (the Case and the labels), :mod:`.geometry` (grid, shapes, affine),
:mod:`.anatomy` (one function per structure), :mod:`.lesions`, :mod:`.acquisition` (spacing,
drift, noise, blur), :mod:`.generator` (``make_phantom``), :mod:`.writing` (``write_phantoms``).
"""

from .acquisition import _gauss_noise_gain, sample_spacing  # noqa: F401
from .case import BACKGROUND, CLASS_NAMES, CYST, ORGAN, TUMOUR, Case
from .generator import FOV_MM, SMALL_SHAPE, make_phantom
from .geometry import (  # noqa: F401  (private helpers re-exported for older imports)
    _capsule_dist,
    _check_triplet,
    _curve,
    _ellipsoid_q,
    _Grid,
    _paint_spheres_chain,
    _rotation,
    _smooth_noise,
    affine_from_spacing,
)
from .writing import write_phantoms

__all__ = [
    "BACKGROUND",
    "CLASS_NAMES",
    "CYST",
    "Case",
    "FOV_MM",
    "ORGAN",
    "SMALL_SHAPE",
    "TUMOUR",
    "affine_from_spacing",
    "make_phantom",
    "sample_spacing",
    "write_phantoms",
]
