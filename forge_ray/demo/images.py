"""Generated images with checkable captions and questions, for the vision-language demo.

Each picture is a small RGB canvas holding 1–3 copies of one shape (square, circle,
triangle) in one colour, grouped on the left or the right. Its caption says all four facts
("two red circles on the left") and its questions ask one each, with one-word answers an
exact-match scorer can check: what colour, what shape, how many, which side. Chance is 1/4
for colour, 1/3 for shape and count, 1/2 for side. Images and JSONL rows are a pure function
of the seed.

    forge demo-data ./forge_runs/demo-data   # writes vlm/ beside the text corpus
"""

from __future__ import annotations

import json
import random
from pathlib import Path

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("square", "circle", "triangle")
COUNTS = {1: "one", 2: "two", 3: "three"}
SIDES = ("left", "right")


def draw(colour: str, shape: str, count: int, side: str, size: int, rng: random.Random):
    """One image: ``count`` shapes stacked in a column on ``side``, with a little jitter."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (245, 245, 245))
    pen = ImageDraw.Draw(img)
    cell = size // 3
    x0 = (0 if side == "left" else size - cell) + rng.randint(0, max(0, cell // 6))
    for i in range(count):
        y0 = i * cell + rng.randint(0, max(0, cell // 6))
        box = (x0 + 1, y0 + 1, x0 + cell - 2, y0 + cell - 2)
        if shape == "square":
            pen.rectangle(box, fill=COLOURS[colour])
        elif shape == "circle":
            pen.ellipse(box, fill=COLOURS[colour])
        else:
            pen.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=COLOURS[colour])
    return img


def caption(colour: str, shape: str, count: int, side: str) -> str:
    return f"{COUNTS[count]} {colour} {shape}{'s' if count > 1 else ''} on the {side}"


def questions(colour: str, shape: str, count: int, side: str) -> list[tuple[str, str, str]]:
    """(type, question, answer) for each fact."""
    return [("colour", "What colour are the shapes?", colour), ("shape", "What shape are they?", shape),
            ("count", "How many shapes are there?", COUNTS[count]), ("side", "Which side are they on?", side)]


CHANCE = {"colour": 1 / len(COLOURS), "shape": 1 / len(SHAPES), "count": 1 / len(COUNTS), "side": 1 / len(SIDES)}


def write_demo_images(out: Path, seed: int = 0, n_train: int = 600, n_eval: int = 80, size: int = 32) -> dict:
    """``out/images/*.png``, ``captions.jsonl`` (train images), ``vqa_train.jsonl`` and
    ``vqa_eval.jsonl`` (held-out images: none of them is in a training file)."""
    rng = random.Random(seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    files = {name: open(out / name, "w", encoding="utf-8") for name in ("captions.jsonl", "vqa_train.jsonl",
                                                                          "vqa_eval.jsonl")}
    try:
        for i in range(n_train + n_eval):
            facts = (rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(COUNTS)), rng.choice(SIDES))
            rel = f"images/{i:05d}.png"
            draw(*facts, size=size, rng=rng).save(out / rel)
            held_out = i >= n_train
            if not held_out:
                files["captions.jsonl"].write(json.dumps({"image": rel, "text": caption(*facts)}) + "\n")
            for kind, question, answer in questions(*facts):
                target = files["vqa_eval.jsonl" if held_out else "vqa_train.jsonl"]
                target.write(json.dumps({"image": rel, "question": question, "answer": answer, "type": kind}) + "\n")
    finally:
        for f in files.values():
            f.close()
    return {"train_images": n_train, "eval_images": n_eval, "image_size": size}
