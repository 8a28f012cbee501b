"""Label a model's free-text answer to a fact question: correct, hallucinated, or an evasion.

Steps of :func:`judge` for one answer (``gold`` and its ``aliases``, the question's ``subject`` words, the relation's
answer ``kind`` and ``keywords``):

1. **First sentence.** Keep the text up to the first line break or sentence end (``.``, ``!``, ``?`` followed by a
   space or the end; not after ``St.``/``Mt.`` or a capital letter, so ``St. John's`` and ``Washington D.C.`` stay
   whole); drop parentheticals.
2. **Normalise** (:func:`normalize`): Unicode accents removed (NFKD), lower case, apostrophes and periods dropped
   (``Sana'a`` -> ``sanaa``, ``D.C.`` -> ``dc``), other punctuation and hyphens -> spaces, ``st``/``mt`` ->
   ``saint``/``mount``, articles (``the``, ``a``, ``an``) removed.
3. **Unwrap** (:func:`candidate`): leading fillers (``answer``, ``it is``, ``I think`` ...) are stripped; in
   ``<left> is <right>`` the side that does not restate the question is kept (``the capital of Australia is
   Sydney`` and ``Sydney is the capital of Australia`` both give ``sydney``); ``... called / known as / named X``
   gives ``X``.
4. **Decide**, in this order:

   - *evasion (empty)*: nothing is left;
   - *correct* (label 0): the candidate equals the gold answer or an alias (numbers: the first number in the
     candidate, digits or English number words, equals the gold number; symbols: the first word equals the gold
     symbol, any case);
   - *evasion (refusal)*: the answer says it does not know or cannot answer (:data:`REFUSALS`: "I don't know",
     "I'm not sure", "I cannot", "unknown", "sorry" ...);
   - *evasion (restatement)*: every content word of the candidate is a word of the question's subject or of the
     relation (``the capital of Albania``; ``Gold`` asked for gold's symbol);
   - *correct*: the gold answer or an alias occurs as a whole-word sequence in the candidate (``Tokyo, Japan``);
   - *evasion (wrong type)*: the candidate is not an answer of the relation's kind: ``number`` without a number;
     ``symbol`` whose first word is not 1-3 letters; ``name`` with no letter or more than :data:`MAX_NAME_WORDS`
     words (a sentence, not a name);
   - otherwise *hallucinated* (label 1): an attempted, different answer (``Australia`` -> ``Sydney``).

An evasion gives no candidate of the relation at all; it is neither right nor wrong, so it is kept out of the
labelled set and counted.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

AnswerKind = Literal["name", "number", "symbol"]
Verdict = Literal["correct", "hallucinated", "evasion"]

MAX_NAME_WORDS = 6
"""A name answer (city, demonym, element) longer than this many words is a sentence, not a name."""
ARTICLES = frozenset({"the", "a", "an"})
ABBREVIATIONS = {"st": "saint", "mt": "mount", "ste": "sainte"}
FUNCTION_WORDS = frozenset(
    "of for in on at to from by with and or is are was were be it its this that which what who whose called "
    "known as named person people citizen citizens inhabitant inhabitants answer name".split()
)
REFUSALS = (
    "i dont know", "i do not know", "dont know", "im not sure", "i am not sure", "not sure", "no idea",
    "i cannot", "i cant", "i can not", "i am unable", "im unable", "unable to", "i dont have", "i do not have",
    "unknown", "sorry", "as an ai", "there is no", "there isnt", "does not have", "doesnt have", "not applicable",
    "no answer", "cannot be determined", "i am not able", "im not able",
)
FILLERS = re.compile(
    r"^(?:final answer|my answer is|the answer is|answer is|answer|a|sure|ok|okay|well|yes|so|"
    r"i think|i believe|probably|maybe|perhaps|it is|its|it s|that is|thats|that would be|this is|they are|"
    r"theyre|he is|she is)\b\s*"
)
_SENTENCE_END = re.compile(r"(?<!\bSt)(?<!\bMt)(?<![A-Z])[.!?](?=\s|$)")
_PARENS = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_COPULA = re.compile(r"^(?P<left>.+?)\s+(?:is|are|was|were)\s+(?P<right>.+)$")
_CALLED = re.compile(r"\b(?:called|known as|named)\s+(?P<right>.+)$")

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}


def number_to_words(n: int) -> str:
    """English words for ``0 <= n < 1000`` (``79`` -> ``seventy-nine``, ``118`` -> ``one hundred eighteen``)."""
    if not 0 <= n < 1000:
        raise ValueError(f"number_to_words covers 0-999, got {n}")
    if n >= 100:
        rest = n % 100
        return f"{_UNITS[n // 100]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    if n < 20:
        return _UNITS[n]
    return _TENS[n // 10 - 2] + (f"-{_UNITS[n % 10]}" if n % 10 else "")


def first_number(text: str) -> int | None:
    """The first integer in normalised ``text``: digits (``79``, ``79th``) or English number words (``seventy
    nine``, ``one hundred and eighteen``); ``None`` when there is none."""
    words = text.split()
    for i, w in enumerate(words):
        digits = re.match(r"\d+", w)
        if digits:
            return int(digits.group())
        if w in NUMBER_WORDS:
            value = 0
            for nxt in words[i:]:
                if nxt in NUMBER_WORDS:
                    value += NUMBER_WORDS[nxt]
                elif nxt == "hundred":
                    value *= 100
                elif nxt != "and":
                    break
            return value
    return None


def normalize(text: str) -> str:
    """Case, accents, punctuation and articles removed (module docstring, step 2)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower().replace("&", " and ")
    text = re.sub(r"['’‘`´.]", "", text)
    text = re.sub(r"[^\w\s]|_", " ", text)
    words = [ABBREVIATIONS.get(w, w) for w in text.split()]
    return " ".join(w for w in words if w not in ARTICLES)


def first_sentence(answer: str) -> str:
    """The answer up to its first line break or sentence end, parentheticals removed (step 1)."""
    text = answer.strip().split("\n", 1)[0] if answer.strip() else ""
    match = _SENTENCE_END.search(text)
    if match:
        text = text[: match.start()]
    return _PARENS.sub(" ", text).strip()


def _restates(words: Iterable[str], question_words: set[str]) -> bool:
    return all(w in question_words or w in FUNCTION_WORDS for w in words)


def candidate(answer: str, question_words: set[str]) -> str:
    """The normalised answer with fillers and question-restating wrappers removed (step 3)."""
    text = normalize(first_sentence(answer))
    for _ in range(4):
        before = text
        text = FILLERS.sub("", text).strip()
        called = _CALLED.search(text)
        if called:
            text = called.group("right")
        cop = _COPULA.match(text)
        if cop:
            left, right = cop.group("left").split(), cop.group("right").split()
            if _restates(left, question_words) or any(w in question_words - FUNCTION_WORDS for w in left):
                text = " ".join(right)
            elif right and (right[0] in question_words or _restates(right, question_words)):
                text = " ".join(left)
        if text == before:
            break
    return text


def _contains(words: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(list(words[i : i + n]) == list(phrase) for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str
    """``exact`` / ``contains`` (correct), ``different`` (hallucinated), or the kind of evasion: ``empty``,
    ``refusal``, ``restatement``, ``wrong_type``."""
    candidate: str

    @property
    def label(self) -> int | None:
        """0 = correct, 1 = hallucinated, ``None`` = evasion (not labelled)."""
        return {"correct": 0, "hallucinated": 1}.get(self.verdict)


def judge(
    answer: str,
    gold: str,
    aliases: Sequence[str] = (),
    *,
    kind: AnswerKind = "name",
    subject: str = "",
    keywords: Sequence[str] = (),
) -> Judgement:
    """Correct, hallucinated or evasion for one answer (the rules of the module docstring, step 4)."""
    question_words = set(normalize(subject).split()) | {w for k in keywords for w in normalize(k).split()}
    cand = candidate(answer, question_words)
    words = cand.split()
    if not words:
        return Judgement("evasion", "empty", cand)
    golds = [normalize(g) for g in (gold, *aliases) if normalize(g)]
    if kind == "number":
        value = first_number(cand)
        if value is not None and str(value) in golds:
            return Judgement("correct", "exact", cand)
    elif kind == "symbol":
        if words[0] in golds:
            return Judgement("correct", "exact", cand)
    elif cand in golds:
        return Judgement("correct", "exact", cand)
    full = normalize(first_sentence(answer))
    if any(_contains(full.split(), r.split()) for r in REFUSALS):
        return Judgement("evasion", "refusal", cand)
    if _restates(words, question_words):
        return Judgement("evasion", "restatement", cand)
    if kind == "name" and any(_contains(words, g.split()) for g in golds):
        return Judgement("correct", "contains", cand)
    if kind == "number" and first_number(cand) is None:
        return Judgement("evasion", "wrong_type", cand)
    if kind == "symbol" and not (words[0].isalpha() and len(words[0]) <= 3):
        return Judgement("evasion", "wrong_type", cand)
    if kind == "name" and (len(words) > MAX_NAME_WORDS or not any(c.isalpha() for c in cand)):
        return Judgement("evasion", "wrong_type", cand)
    return Judgement("hallucinated", "different", cand)
