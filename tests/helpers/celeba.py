"""Tiny CelebA folders in the official layout (tests/unit/test_datasets.py, test_baselines.py)."""

from pathlib import Path

import numpy as np

ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def write_celeba(folder: Path, parts=(0, 0, 0, 0, 1, 1, 2, 2), seed=0):
    """The official CelebA files torchvision's CelebA reads (tiny, so their MD5 sums differ)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(parts))]
    for n in names:
        Image.fromarray(rng.integers(0, 255, (22, 18, 3), dtype=np.uint8)).save(folder / "img_align_celeba" / n)
    attrs = rng.choice([-1, 1], size=(len(names), 40))
    rows = "".join(n + "".join(f" {v:2d}" for v in row) + "\n" for n, row in zip(names, attrs))
    (folder / "list_attr_celeba.txt").write_text(f"{len(names)}\n" + " ".join(ATTRS) + "\n" + rows)
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{len(names)}\nimage_id x_1 y_1 width height\n" + "".join(f"{n} 1 2 3 4\n" for n in names)
    )
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{len(names)}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n"
        + "".join(f"{n} 1 2 3 4 5 6 7 8 9 10\n" for n in names)
    )
    return folder, dict(zip(names, attrs)), dict(zip(names, parts))
