"""How long an attached photo costs: the check and the copy into the data folder, and its
scaling for the request (``[chat] image_max_side``), for a photo of about 20 MB.

    .venv/bin/python bench/attachments.py [--side 1024] [--repeat 3]

Prints JSON. The photo is random noise (the worst case for PNG: it hardly compresses).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image

from engines.attachments import image_for_model, load_image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        photo = base / "photo.png"
        Image.frombytes("RGB", (2600, 2600), os.urandom(2600 * 2600 * 3)).save(
            photo, compress_level=1
        )
        attach, scale = [], []
        sent = b""
        for n in range(args.repeat):
            start = time.perf_counter()
            attached = load_image(str(photo), base / f"store{n}", 100_000_000)
            attach.append(time.perf_counter() - start)
            start = time.perf_counter()
            sent = image_for_model(attached.path, args.side)
            scale.append(time.perf_counter() - start)
        print(
            json.dumps(
                {
                    "photo_bytes": photo.stat().st_size,
                    "photo_pixels": "2600x2600",
                    "attach_s_median": round(statistics.median(attach), 3),
                    "scale_s_median": round(statistics.median(scale), 3),
                    "sent_bytes": len(sent),
                    "max_side": args.side,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
