"""VQAv2 accuracy: the official answer normalisation and the leave-one-out "min(1, matches / 3)" score.

`normalize_vqa_answer` follows `vqaEval.py` of the official VQA API (github.com/GT-Vision-Lab/VQA, HEAD a013f00) rule
for rule, quirks included, and `vqa_score` applies it where that code does (to the human answers and the prediction
alike when the humans disagree, to neither when they agree unanimously), so numbers here match the official code's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# The official map, verbatim. Keys with capitals ("Im", "Ive", "Id've") can never match, since answers are lower-cased
# first; they are kept so the table stays a faithful copy.
CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
DIGIT_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
# Removed outright when they touch a space (or the text has a digit-comma-digit); otherwise replaced by a space, so
# "black/white" -> "black white" but "black / white" -> "black  white" and "1,000" -> "1000". Apostrophes, colons and
# some others are kept, as officially.
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# Official regex, bug included: "(?!<=\d)" is a lookahead for the text "<=digit", not a lookbehind, so every period
# not followed by a digit goes ("2.5" stays, "1." and "st." lose it).
# Python 2 regexes without re.UNICODE, as the official code compiles them: `\d` is an ASCII digit only.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)", re.ASCII)
# The official call is `periodStrip.sub("", text, re.UNICODE)`: the flag lands in `count`, so at most 32 periods go.
_PERIOD_STRIP_COUNT = int(re.UNICODE)


def _process_punctuation(text: str) -> str:
    out = text
    # The official test reads the input text, not the text as already rewritten: mirrored here.
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def _process_digits_and_articles(text: str) -> str:
    words = [DIGIT_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_vqa_answer(text: str) -> str:
    """The official VQAv2 answer normalisation (vqaEval.py).

    Lower case; newlines and tabs to spaces; strip; punctuation removed or replaced by a space (see `PUNCTUATION`);
    periods not followed by a digit removed; words `none`, `zero`..`ten` to `0`..`10`; articles `a an the` dropped;
    contractions written without their apostrophe restored ("dont" -> "don't"); single spaces.
    """
    return _normalize_stripped(_whitespace(text))


def vqa_score(prediction: str, answers: Sequence[str], normalize_unanimous: bool = False) -> float:
    """VQA accuracy of one answer against the human answers, as the official `vqaEval.py` (HEAD) computes it.

    Newlines and tabs become spaces and both sides are stripped. When the humans disagree, both their answers and the
    prediction go through the punctuation, digit, article and contraction rules; when they all gave the same answer,
    the official code normalises nothing more, so "two" against ten "2" scores 0 (`normalize_unanimous=True`
    normalises both sides fully there too, which is not the official number). With several answers: the mean, over
    each answer left out in turn, of min(1, matches among the others / 3): with the 10 answers of VQAv2, 4+ matches
    score 1.0, 3 score 0.9, 2 score 0.6, 1 scores 0.3. With one answer (where the official leave-one-out always gives
    0): exact match after full normalisation, 1.0 or 0.0.
    """
    if isinstance(answers, str):
        raise TypeError("answers must be a list of reference answers, not one string")
    if len(answers) == 0:
        raise ValueError("vqa_score needs at least one reference answer")
    if len(answers) == 1:
        return float(normalize_vqa_answer(prediction) == normalize_vqa_answer(answers[0]))
    answers = [_whitespace(answer) for answer in answers]
    predicted = _whitespace(prediction)
    # GT-Vision-Lab/VQA a013f00 ("Fixed processing answers bug"): both sides, and only when the humans disagree.
    if len(set(answers)) > 1 or normalize_unanimous:
        answers = [_normalize_stripped(answer) for answer in answers]
        predicted = _normalize_stripped(predicted)
    matches = [answer == predicted for answer in answers]
    total = sum(matches)
    # Official loop: one term per left-out answer, summed in order, then divided by their number.
    scores = [min(1.0, (total - left_out) / 3) for left_out in matches]
    return sum(scores) / len(scores)


def _whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _normalize_stripped(text: str) -> str:
    """The official order on text whose whitespace is already handled: punctuation, then digits/articles (which
    lower-cases)."""
    return _process_digits_and_articles(_process_punctuation(text))


def vqa_accuracy(
    predictions: Sequence[str], references: Sequence[Sequence[str]], normalize_unanimous: bool = False
) -> dict[str, float]:
    """`{"accuracy": mean vqa_score}` over items, in [0, 1] (the official server reports 100 times it)."""
    if len(predictions) != len(references):
        raise ValueError(
            f"vqa_accuracy got {len(predictions)} predictions but {len(references)} reference lists: one list of "
            "human answers per prediction."
        )
    if len(predictions) == 0:
        raise ValueError("vqa_accuracy got no predictions: accuracy of nothing is undefined.")
    scores = []
    for index, (prediction, answers) in enumerate(zip(predictions, references, strict=True)):
        if isinstance(answers, str):
            raise ValueError(f"references[{index}] is a string; it must be a list of reference answers.")
        if len(answers) == 0:
            raise ValueError(f"references[{index}] is an empty list: each item needs at least one reference answer.")
        scores.append(vqa_score(prediction, answers, normalize_unanimous))
    return {"accuracy": sum(scores) / len(scores)}


__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "DIGIT_WORDS",
    "PUNCTUATION",
    "normalize_vqa_answer",
    "vqa_accuracy",
    "vqa_score",
]
