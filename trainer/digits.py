"""A small real dataset that ships offline: sklearn's 1,797 handwritten digits written as ImageNet-style
class folders of JPEG files, for tests and the testbed's accuracy job.

    python -m trainer.digits OUT_DIR [--px 32]
"""
from __future__ import annotations

import argparse
from pathlib import Path

DIGIT_PX = 32  # 8x8 digits upscaled 4x


def write_digits(root: Path, px: int = DIGIT_PX) -> Path:
    """root/{train,val}/digit<k>/<n>.jpg (RGB, px x px). Deterministic split: every 5th image of each
    class goes to val (~20%)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    seen: dict = {}
    for n, (img, label) in enumerate(zip(digits.images, digits.target)):
        k = seen.get(label, 0)
        seen[label] = k + 1
        split = "val" if k % 5 == 4 else "train"
        d = Path(root) / split / f"digit{label}"
        d.mkdir(parents=True, exist_ok=True)
        gray = (255 - img * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # dark ink on white
        Image.fromarray(gray, "L").resize((px, px), Image.BICUBIC).convert("RGB").save(
            d / f"{n:04d}.jpg", quality=95)
    return Path(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--px", type=int, default=DIGIT_PX)
    args = ap.parse_args()
    write_digits(args.out, args.px)
    print(f"wrote {sum(1 for _ in args.out.rglob('*.jpg'))} images to {args.out}")


if __name__ == "__main__":
    main()
