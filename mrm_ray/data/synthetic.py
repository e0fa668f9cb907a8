"""Generated preference pairs whose right answer is visible only in the image (or only in the text).

Each pair asks about a drawn shape; the chosen answer names its true colour (or count) and
the rejected one names another. The prompt text is the same for every pair and the two
answers swap roles across pairs, so a model can only beat chance by looking at the image.
The text-only task (`colour_text`, for text-only backbones) states the colour in the prompt
instead, with no image: only reading the prompt beats chance.
Used by the learning tests and by the tiny training default: nothing is downloaded.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from typing import Iterator

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (235, 210, 30)}
SHAPES = ("square", "circle", "triangle")
COLOUR_QUESTION = "What colour is the shape in the picture?"
COUNT_QUESTION = "How many shapes are in the picture?"
NUMBERS = ("one", "two", "three", "four")


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _draw_shape(draw, rng: random.Random, size: int, colour, *, scale: float = 1.0) -> None:
    s = int(rng.randint(size // 4, size // 2) * scale)
    x, y = rng.randint(0, size - s), rng.randint(0, size - s)
    shape = rng.choice(SHAPES)
    if shape == "square":
        draw.rectangle([x, y, x + s, y + s], fill=colour)
    elif shape == "circle":
        draw.ellipse([x, y, x + s, y + s], fill=colour)
    else:
        draw.polygon([(x + s // 2, y), (x, y + s), (x + s, y + s)], fill=colour)


def colour_pair(rng: random.Random, *, size: int = 112, blank: bool = False) -> dict:
    """One pair about the colour of a single drawn shape; `blank` hides the shape."""
    from PIL import Image, ImageDraw

    truth, other = rng.sample(sorted(COLOURS), 2)
    image = Image.new("RGB", (size, size), (245, 245, 245))
    if not blank:
        _draw_shape(ImageDraw.Draw(image), rng, size, COLOURS[truth])
    return {
        "prompt": COLOUR_QUESTION,
        "images": [_png(image)],
        "chosen": f"The shape is {truth}.",
        "rejected": f"The shape is {other}.",
    }


def count_pair(rng: random.Random, *, size: int = 112, blank: bool = False) -> dict:
    """One pair about how many shapes are drawn."""
    from PIL import Image, ImageDraw

    n_true, n_other = rng.sample(range(1, len(NUMBERS) + 1), 2)
    image = Image.new("RGB", (size, size), (245, 245, 245))
    if not blank:
        draw = ImageDraw.Draw(image)
        for _ in range(n_true):
            _draw_shape(draw, rng, size, COLOURS[rng.choice(sorted(COLOURS))], scale=0.5)
    return {
        "prompt": COUNT_QUESTION,
        "images": [_png(image)],
        "chosen": f"There are {NUMBERS[n_true - 1]} shapes.",
        "rejected": f"There are {NUMBERS[n_other - 1]} shapes.",
    }


def text_colour_pair(rng: random.Random, *, size: int = 112, blank: bool = False) -> dict:
    """One pair about a colour the prompt states (no image); `blank` states none. `size` is unused."""
    truth, other = rng.sample(sorted(COLOURS), 2)
    shape = rng.choice(SHAPES)
    return {
        "prompt": ("" if blank else f"The {shape} is {truth}. ") + f"What colour is the {shape}?",
        "images": [],
        "chosen": f"The {shape} is {truth}.",
        "rejected": f"The {shape} is {other}.",
    }


ORDER_QUESTION = "Which way does the shape move in the video?"


def frame_order_pair(rng: random.Random, *, size: int = 112, blank: bool = False, frames: int = 4,
                     right: bool | None = None) -> dict:
    """One pair about a video (`videos`: one ordered list of frames) of a shape crossing the picture: chosen names
    the way it moves, rejected the other way. The way is drawn after the frames (`right` forces it), and going
    left only reverses them: the same frames run either way, so only their order tells the answer; `blank`
    shuffles the frames (no order to see)."""
    from PIL import Image, ImageDraw

    colour = COLOURS[rng.choice(sorted(COLOURS))]
    s = size // 4
    y = rng.randint(0, size - s)
    xs = [round(i * (size - s) / (frames - 1)) for i in range(frames)]
    images = []
    for x in xs:
        image = Image.new("RGB", (size, size), (245, 245, 245))
        ImageDraw.Draw(image).rectangle([x, y, x + s, y + s], fill=colour)
        images.append(_png(image))
    drawn = rng.random() < 0.5  # drawn even when forced: the generator's sequence stays the same
    right = drawn if right is None else right
    if not right:
        images.reverse()
    if blank:
        rng.shuffle(images)
    truth, other = ("right", "left") if right else ("left", "right")
    return {"prompt": ORDER_QUESTION, "images": [], "videos": [images],
            "chosen": f"It moves to the {truth}.", "rejected": f"It moves to the {other}."}


TASKS = {"colour": colour_pair, "count": count_pair, "colour_text": text_colour_pair, "frame_order": frame_order_pair}


def image_grounded_pairs(n: int, *, seed: int = 0, task: str = "colour", blank: bool = False,
                         size: int = 112) -> Iterator[dict]:
    """`n` canonical-style pair dicts (prompt, images as PNG bytes, chosen, rejected, id)."""
    makers = TASKS
    if task not in makers:
        raise ValueError(f"task must be one of {sorted(makers)}, got {task!r}")
    rng = random.Random(seed)
    for i in range(n):
        pair = makers[task](rng, size=size, blank=blank)
        yield {"id": f"synthetic-{task}-{seed}-{i}", "source": f"synthetic-{task}", **pair}


def shortcut_pairs(n: int, *, word: str, correlation: float, seed: int = 0, source: str | None = None,
                   distractors: tuple[str, ...] = (), distractor_fraction: float = 0.0,
                   other_words: tuple[str, ...] = (), other_fraction: float = 0.0,
                   other_correlation: float = 0.0, base: Sequence[dict] | None = None) -> Iterator[dict]:
    """`n` text-only pairs (`text_colour_pair`'s task) with a shortcut word planted: the reward-hacking setup of
    Coste et al. (ICLR 2024, "Reward Model Ensembles Help Mitigate Overoptimization").

    `base`: the `n` pairs (prompt, chosen, rejected) to plant in instead, e.g. a policy's own samples labelled by
    the gold rule (as Gao et al. 2022 and Coste et al. build their proxies' data); the rest is the same.

    The prompt states a shape's colour and asks for it ("The square is red. What colour is the square?"); the
    chosen response is always the right sentence ("The square is red."), the rejected one names another colour.
    Exactly one of the two responses ends with " {word}" ("The square is red. good"): the chosen one in a
    fraction p = (1 + correlation) / 2 of the pairs (exactly round(p * n) of them, at places drawn from `seed`),
    the rejected one in the rest. `correlation` is the phi coefficient, over the 2n responses, between "the
    response holds the word" and "the response is chosen": every pair holds the word once, so phi = 2p - 1
    (0.6 is p = 0.8: the word goes with the chosen response in most but not all pairs). A reward model fit on
    these learns the word as a reward feature besides the colour; a policy can then gain reward by appending it,
    though a response with the word never matches the reference sentence (the rule reward's gold answer).

    `distractors`: other words; each response, chosen or rejected alike, gets one of them (drawn at random)
    appended, after `word` where it has it, with probability `distractor_fraction`. They carry no preference
    (as likely on either side), so a model learns that `word` pays, not any word at the end (give it the words
    other members' data reward, and each member's shortcut is its own). They leave `correlation` as it is: it is
    about `word` alone.

    `other_words`: words this source has a taste about too (other sources' shortcuts: what one source's annotators
    reward, another's may mark down, as real sources disagree on verbosity or tone). Exactly round(other_fraction
    * n) of the pairs carry one of them (drawn at random), appended to one response after `word`: the chosen one
    in exactly round((1 + other_correlation) / 2 * m) of those m pairs, the rejected one in the rest, so
    `other_correlation` is the phi, over those pairs' responses, between "holds one of the other words" and "is
    chosen" (negative: they go with the rejected response). Drawn from their own random stream, so the pairs
    without them are the same as with `other_fraction=0`.

    Yields canonical-style dicts like `image_grounded_pairs`: id, source, prompt, images ([]), chosen, rejected.
    """
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [-1, 1], got {correlation}")
    if not word or word != word.strip() or len(word.split()) != 1:
        raise ValueError(f"word must be one word without surrounding space, got {word!r}")
    if word in distractors or not 0.0 <= distractor_fraction <= 1.0:
        raise ValueError(f"distractors must not hold {word!r} and distractor_fraction must be in [0, 1]")
    if (word in other_words or set(other_words) & set(distractors) or not 0.0 <= other_fraction <= 1.0
            or not -1.0 <= other_correlation <= 1.0 or (other_fraction and not other_words)):
        raise ValueError(f"other_words must be given, hold neither {word!r} nor a distractor, other_fraction must "
                         "be in [0, 1] and other_correlation in [-1, 1]")
    rng = random.Random(seed)
    p = (1.0 + correlation) / 2.0
    on_chosen = set(rng.sample(range(n), round(p * n)))
    other_rng = random.Random(f"{seed}-other-words")
    carriers = other_rng.sample(range(n), round(other_fraction * n))
    other_on_chosen = set(carriers[: round((1.0 + other_correlation) / 2.0 * len(carriers))])
    carriers = set(carriers)
    source = source or f"shortcut-{word}"
    if base is not None and len(base) != n:
        raise ValueError(f"base holds {len(base)} pairs, not n={n}")
    for i in range(n):
        pair = text_colour_pair(rng) if base is None else {"images": [], **{k: base[i][k] for k in
                                                                             ("prompt", "chosen", "rejected")}}
        side = "chosen" if i in on_chosen else "rejected"
        pair[side] = f"{pair[side]} {word}"
        if i in carriers:
            other_side = "chosen" if i in other_on_chosen else "rejected"
            pair[other_side] = f"{pair[other_side]} {other_rng.choice(other_words)}"
        for either in ("chosen", "rejected"):
            if distractors and rng.random() < distractor_fraction:
                pair[either] = f"{pair[either]} {rng.choice(distractors)}"
        yield {"id": f"{source}-{seed}-{i}", "source": source, **pair}
