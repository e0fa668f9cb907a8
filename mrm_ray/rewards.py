"""Reward arithmetic beside the reward model: answer checking, the rule reward and the hybrid reward.

Pure functions that serving (`/v1/score?reward=hybrid`, `/get_reward`) and RL (the GRPO job's
rule reward, the veRL reward function) share; nothing here touches a model.

- `extract_answer`: the response's final answer, by the conventions RL stacks grade with: the
  last `\\boxed{...}` (nested braces and `\\fbox` too), else `<answer>...</answer>`, else
  "the (final) answer is X" / "Answer: X" on the last line, else the whole response.
- `answer_matches(response, reference)`, by the reference's kind:
  * a choice letter ("A", "(b)", "C."): the letter the response chose ("\\boxed{B}", "(B) ...",
    "The answer is B.", "B. red"), case-insensitive;
  * a number ("1,234", "$5", "50%", "3.0 cm", "\\frac{1}{2}", "1/2"): equal numbers (relative
    1e-6), thousands separators, currency and percent signs dropped; units must agree when both
    name one, and a bare number matches a number with a unit;
  * anything else: equal after lower-casing and dropping punctuation (but '-' and '.'),
    articles and surrounding space, LaTeX `\\text{}` and `$` delimiters.
- `rule_reward`: 1 on a match, else 0. `hybrid_reward` (BaseReward's RL reward): 1 on a match,
  else sigmoid(model reward), so both branches share one (0, 1] scale.
"""

from __future__ import annotations

import math
import re
import string

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is\s*:?|:)\s*(.+?)\s*$", re.I | re.S)
_PUNCT = str.maketrans("", "", string.punctuation.replace("-", "").replace(".", ""))
_CHOICE = re.compile(r"^\(?([A-Ja-j])\)?[.):]?$")
# a choice the response made: "(B) ..." or "B. ..." / "B) ..." / "B: ..." at the start, "(B)" anywhere,
# or "... B." ending the line (a capital letter followed by a space is a word: "I think", "A cat")
_CHOSEN = (re.compile(r"^\(?([A-J])(?:\)|[.:])"), re.compile(r"\(([A-J])\)"), re.compile(r"(?:^|\s)([A-J])[.)]?$"))
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMBER = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*(.*)$", re.I)
_FRACTION = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$|^([+-]?\d+)\s*/\s*(\d+)$")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def _last_braced(text: str, commands: tuple[str, ...] = ("\\boxed", "\\fbox")) -> str | None:
    """The content of the last `\\boxed{...}` (balanced braces), or of `\\boxed X` without braces."""
    best, best_at = None, -1
    for command in commands:
        at = text.rfind(command)
        if at <= best_at:
            continue
        rest = text[at + len(command):]
        if rest.startswith("{"):
            depth = 0
            for i, ch in enumerate(rest):
                depth += (ch == "{") - (ch == "}")
                if depth == 0:
                    best, best_at = rest[1:i], at
                    break
        elif rest.startswith(" "):
            best, best_at = rest.split("$")[0].strip(), at
    return best


def extract_answer(response: str) -> str:
    """The final answer: last \\boxed{...}, else <answer>...</answer>, else 'the answer is X', else all."""
    boxed = _last_braced(response)
    if boxed is not None:
        return boxed
    tags = _ANSWER_TAG.findall(response)
    if tags:
        return tags[-1]
    last_line = response.strip().splitlines()[-1] if response.strip() else ""
    match = _ANSWER_IS.search(last_line)
    return match.group(1) if match else response


def _plain(text: str) -> str:
    """LaTeX wrappers off: `$...$`, `\\text{...}`, `\\%`, `\\$`, `^\\circ`, `\\left`/`\\right`, `\\!`, `\\,`."""
    text = _LATEX_TEXT.sub(r"\1", text.strip())
    for old, new in (("\\%", "%"), ("\\$", "$"), ("^\\circ", "°"), ("^{\\circ}", "°"), ("\\left", ""),
                     ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", " ")):
        text = text.replace(old, new)
    if len(text) >= 2 and text[0] == text[-1] == "$":
        text = text[1:-1]
    return text.strip()


def normalize_answer(text: str) -> str:
    """Case, surrounding whitespace, punctuation (but '-' and '.'), a trailing period, articles."""
    text = _plain(text).lower().translate(_PUNCT).rstrip(".").strip()
    stripped = " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())
    return stripped or " ".join(text.split())  # "a" alone is an answer, not an article


def _number(text: str) -> tuple[float, str] | None:
    """(value, unit) of a numeric answer, or None: '1,234.5 km' -> (1234.5, 'km'), '50%' -> (50.0, '%')."""
    text = re.sub(r"^[a-zA-Z]\s*=\s*", "", _plain(text).rstrip(".").strip())  # "x = 5"
    text = text.lstrip("$€£¥").strip()
    fraction = _FRACTION.match(text)
    if fraction:
        top, bottom = (fraction.group(1), fraction.group(2)) if fraction.group(1) else fraction.group(3, 4)
        try:
            return float(top) / float(bottom), ""
        except (ValueError, ZeroDivisionError):
            return None
    thousands = _THOUSANDS.match(text)
    if thousands:
        text = thousands.group(0).replace(",", "") + text[thousands.end():]
    match = _NUMBER.match(text)
    if not match:
        return None
    unit = match.group(2).strip().lower().rstrip(".")
    if len(unit) > 12 or re.search(r"\d", unit):  # a sentence or an expression, not a unit
        return None
    return float(match.group(1)), unit


def _chosen_letter(response: str) -> str | None:
    answer = _plain(extract_answer(response)).strip()
    candidates = [answer]
    if answer == response.strip():  # no answer marker: the last line says it, if anything does
        candidates = [response.strip().splitlines()[-1].strip()] if response.strip() else []
    for text in candidates:
        if len(text) == 1 and text.upper() in "ABCDEFGHIJ":
            return text.upper()
        for pattern in _CHOSEN:
            found = pattern.search(text)
            if found:
                return found.group(1)
    return None


def answer_matches(response: str, reference: str | None) -> bool:
    """Whether the response's final answer is the reference (a choice letter, a number or text)."""
    if reference is None or not _plain(reference):
        return False
    choice = _CHOICE.match(_plain(reference))
    if choice:
        return _chosen_letter(response) == choice.group(1).upper()
    answer = extract_answer(response)
    want, got = _number(reference), _number(answer)
    if want is not None:
        if got is None:
            return False
        (a, unit_a), (b, unit_b) = want, got
        same_unit = not unit_a or not unit_b or unit_a == unit_b
        return same_unit and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return normalize_answer(answer) == normalize_answer(reference)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def rule_reward(response: str, reference: str | None) -> float:
    """1.0 when the final answer matches the reference, else 0.0."""
    return 1.0 if answer_matches(response, reference) else 0.0


def hybrid_reward(response: str, reference: str | None, model_reward: float) -> float:
    """1.0 on a match with `reference`; otherwise sigmoid(model_reward)."""
    return 1.0 if answer_matches(response, reference) else sigmoid(model_reward)
