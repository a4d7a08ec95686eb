"""Golden checksums of the evaluation phantoms: ``make_phantom(seed)`` for seeds 0-39.

``miqsam evaluate phantom:40:0`` and the numbers in docs/results.md are computed on exactly these
volumes, so any change to the generator (the order its random streams are consumed in, a dtype, a
formula) shows here first. Refactors must keep every hash; a deliberate change to the phantoms
updates the literals below in the same commit and re-runs the evaluations the docs report.

The hashes are of the raw bytes (image float32, labels uint8, C order), so they also depend on
numpy/scipy giving bit-identical results; they were computed with the versions in the project's
environment.
"""

from __future__ import annotations

import hashlib

import numpy as np

from napari_miqsam.data.phantom import make_phantom

# seed -> (sha256 of image float32 bytes, sha256 of labels uint8 bytes), default shape and spacing
GOLDEN: dict[int, tuple[str, str]] = {
    0: ("8105b0bfcb427f7a725fdae0b0871d387ecefc7bb364e667bc934212e645c4dd",
         "4b6d0253d3c489c57a3541bee47c3c199a4d7029b3f40d9919065a78d6f99c97"),
    1: ("19bc9f342bbaa231e1fa344e7bb1d860ccad008b541128f0e8aaad2b0d220606",
         "fac99e316232530816822be399952475f877ffa1d2a59abcb7fdd0893979125a"),
    2: ("d739aa5565d25bd5045ab5dc1ae3aaf049b73156df173738a758714c0f92c344",
         "3bb2cae5cb3702361ba568de02f0d61f72b63a05110ae2c5c5e5e7d52b1cdd20"),
    3: ("e59bee00ef8c486066e59caaa80b51c1005b3e6d52ef761f3bcd715236f557d7",
         "9727c74640c4d27013f8a9a4269b3f3708446884ea65db305a3325bfa092878b"),
    4: ("bc142f84171d3301c2d6b3a7513f5f62685cd909d9a47c0d1958fdcb0656932d",
         "a1765ccc447d0c7556ba7a0a70403a86cff8b23225121efd426609d6378f0bcf"),
    5: ("8af589772e9c6f5003b6d7bbaad81110655e64c9e2a5c8edc1ea909caf26764d",
         "719ae9bf8dc8fc3b0cb6d7457be232accabad1ad0b3c78ca3867bfc957b3d18b"),
    6: ("147e66a8788ce53b74e4bbda89140c55adda4b6c9077c91077f34f3b05639480",
         "d5b6b5292d84a71b2f30f81708bc0ae949967917e979e0274c55a9f2a9fadee0"),
    7: ("fa297c618f06da5cf0e19a4afb1f7b8cf49772e6fa1d237372108796e6ba67ae",
         "0b73c4a7fdd451bdd4da78a6c634b7797a1766bf701ba42bd86f414d4deaa3c8"),
    8: ("1e07441dd904d628b7b0f20b859c6c8da6d60b9bb9ea2ef4c42b69b10d7fae86",
         "d283e15e5ca1835dff4f2392c5c2aa1b99c1314d3689454fbb9b83d57e873c33"),
    9: ("f9980fa39a23064a191efe372447d1241eaf08863ed3f11d4b4b3d83fab7eed7",
         "80bbc5921dbd528e48ef0a0e2e62cc51796c2e7ceb3e2e9f58a6c25799b14ae4"),
    10: ("617c3959f0bb5b29083ca7fbe724f6dedec2b2fe906a2b9991099e3be6034c0c",
         "e606cf46193fa8947c4e978e73253f0f5ff31cc71a9aad6f5b980c24ba45c5a0"),
    11: ("9e76dc9c5b9a7cf4b6fec96df022e7428e10a168fe6cf8388a65ec9d9e54b10f",
         "086b48ba9b44a17c6aefca241fb3b0d5c3577c65546ef437afb409949f3de360"),
    12: ("7176c0887823bab52a0eb52e1f264612c745079e276ee89255fb4a95752922f3",
         "e8f942dff3e5ae062d4f032101f6474baf900f4f586b1a7f456aaef057e9eb15"),
    13: ("a83911ee425443f5824d7f788170e1b52e4424b5008ae97e8d45f4a7cecde40a",
         "99cc73c32e4653be12fe0b29b34318104b68c1a1b1033346dcbb566a8d64485c"),
    14: ("209144e746061f03e367f5d4cc4107c0c12c72b7c6c305ac94b65e05742a9594",
         "aec1ddb231d28244c7172ad87dddca689d47422a51a8cd6635c41b6a12f086de"),
    15: ("0fd1ef3703778959c198067cbc58c1fe0c0d19ea937d22537150941835403722",
         "fc8af2280f9a177dd6843ce6fd137475235398d7c41f9fc75c20d1e916f627f5"),
    16: ("901ba7fbae26f46f760f00940a7f4d458e5c335d742ed105899700263e4d2924",
         "8bdfbda49216248e17bd6d3c0e55e25a46473c28537adf911cbb8e6e6fdd0ec2"),
    17: ("5a3eb02abc0a65f164f0b936a531925ed5f4f48de4f81c39076c7147618d48c2",
         "28dfe004d805c1ea6d266a3f3775250e320da4e64086f9b0548e1f2b1b2e4db3"),
    18: ("e94432b3a93353d528b3d1bcfbebdfc833d1af5e1a22d6e5c9e60db2f6aa88c8",
         "9269d824dff7f7c7b51dac81e0fe4f501b8b6b625d2ec520212b949d9976061c"),
    19: ("6325e0267c821fd421482e6fd3ea250b68c8ce560928d561103c086fb8c86621",
         "d72b8234538844c66a2b36342a8b7fc11fd6d0e5452c737e9c75a8c9804c3850"),
    20: ("898ee96dd692f8beefa0afbb14187211cd9fa1b3334338b5152e93542bce77f6",
         "789fc197f892311db920bf4d1c8382b4a628fb3bf501f7c7260a9cfd83dfe6b8"),
    21: ("958870d4525334c53fbb2b267d28699eb8f44854532b2d6e669f86e4909b5cd6",
         "4b15ee0297a81c8c1ae9596c242195dee545ad82cbe6a4eb1b67dcf062c605a8"),
    22: ("2dc2103b544eb816cb53e9dadf4d038a5e11b5bb196e418a2a597ba8f4067164",
         "ff3f0977b6962d1599564d290a087a5727c8b40c6dce1874b47819b64f9593c7"),
    23: ("710fece8186866e7005ee0e7e1f7a88a545316055bf584eb7294be65239b87b2",
         "b9e59a126621ade1dee6e676378ccf314eca3c13e31128fe0cc21503b3b0ae9a"),
    24: ("dde5ca8fe9dd73eb9f18d6350f2acea5385aee1bde76ca6440c72a27b0e604e4",
         "8455e7c07fd711f0bb3eab005059856a87bbcd169c88f6fd8bbefd44117c9cd5"),
    25: ("64d4f13a7f04a5c96c0746b7d69705a092f8a3d52fcc7775ce19ca5847d5f3f5",
         "9f07c7f5c66a02c10875b723c23a2f6ce43c766a2870cc81f21e67cf5069a86a"),
    26: ("137347b71131e01e38b91f151fa222c2bcbfdad2b50220c254b514fa88c67803",
         "313ed1d7ad4324c80a294b3ae2d7ab2b1f2957f1ae7077ad4caf8224351b604e"),
    27: ("736853eb16ff0083dac0701a2e640b798c5fcd11f1744d00799fdc96a05eb395",
         "12cecf524f708655eb7538f4b64b627af46649f41da48d2a2de82a275529122c"),
    28: ("853ecfdb56ffcdfa3442e7151e907fda1af130b95648ad0a9d7d52a945b50e47",
         "f15dfcdadebf65b14ea64939a247096d0c8f084cc2927efb6e5df8e5c7d48777"),
    29: ("a40990213ef3a27f29cf14682ff6e749c85f32a3687495f4c08c549e12e31829",
         "46139c4ac42040c40f60dfd8cde8157ed69b5fcb1fe33925c32f7f0ed5268f0a"),
    30: ("70b1d1a311751c95dae7803c0e08175ba9a4a79841deba52ea47f423df3a266d",
         "55b73468d8a726e76a0a0702a17e1c682e782ec86bd924c9009933e7a12790e9"),
    31: ("cb849fff1a25bb02f4c6d748e85f6c6d2ec26f3753581773638ac944353aa71d",
         "7af1b81c0265a963cf93d54dd802bff8c22aaec4707df5ead009971ed6fcb7dd"),
    32: ("9fc2635b78156ddb38b7209d3df0fff5e966629a9efa8afb261e7b76038a6b8e",
         "808dd01412305791582d1e97ea825138ace87cedf783f316a2d00efdc2501268"),
    33: ("d9d65c52985f73e4a4beb8c4a30690deec0e7dbe7a69c1e0e5fb76d060f1bd23",
         "51218a3f4920e88788a9d435fe32184815a3960648680f4d981dc7b98fb788e3"),
    34: ("ee4d415947d34c25541e1b5f7ef3a196481edef2231abb34cb101e970b8938fb",
         "300a61e54ee8cbfc21b8600cd43701c918f23cb01cb11e6c90769f7990c27255"),
    35: ("8d52d0c1e230a885a5f2fd9dc6106c8b80ae6032d81a655378bc1f2178a92291",
         "deb0a4830d18d49fcbbc1ec8a7e91ce69606bfe0d0d8438e0e2415f8469a9f01"),
    36: ("fed2b1e65b63eda37d66125e30d0646c93e8e83b4c4c6349c12a5541dea69bec",
         "856ec7cf9d2990047830096ba3ed21e0a5b74aaf9fa4eeba36837983d013cbbb"),
    37: ("9391d0b51e94b41185d6be560e4935d0031bef735de689222462d0da8f2f9258",
         "d6a13d2c8a6becb0b308d5330bb9c7afd150c0eb431fd57f42c6e2c68f930766"),
    38: ("853dbf495bd38d7665857745fa63ae6f28039ec860f5741799c9de25996fc16a",
         "2f4fc0ea6fa90ff6e6bc0687297be41cb60a5e6fe42c907f5c1afd7b3cc329e7"),
    39: ("fde8bc2057d0ffaa3edef724bec7966ed74313ea585f89a05d1741786f4f615b",
         "b7cc4ca10ef258a7aa5ca8dcf45939866e50519b6e50eb9f8e1404656b67795e"),
}


def _sha256(array: np.ndarray, dtype) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=dtype).tobytes()).hexdigest()


def test_evaluation_phantoms_are_bit_identical():
    changed = []
    for seed, (image_sha, labels_sha) in GOLDEN.items():
        case = make_phantom(seed)
        assert case.image.dtype == np.float32 and case.labels.dtype == np.uint8
        if _sha256(case.image, np.float32) != image_sha:
            changed.append(f"seed {seed}: image")
        if _sha256(case.labels, np.uint8) != labels_sha:
            changed.append(f"seed {seed}: labels")
    assert not changed, "evaluation phantoms changed: " + ", ".join(changed)
