"""The tiny tokenizers: an English corpus generated in code (shapes, colours, counting, seismology) and BPE trained
on it the way each family's real tokenizer is laid out (SentencePiece-style with byte fallback, or byte-level).

Training is deterministic (`SEED`), so every call gives byte-identical tokenizer files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SEED = 20240521
_SPIECE_SPACE = "▁"  # SentencePiece's visible space (U+2581)
# The pre-tokenizer regex of LLaMA-3 (tiktoken's cl100k-style pattern), verbatim from Meta-Llama-3-8B.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# --------------------------------------------------------------------------------------------------------------------
# Training corpus
# --------------------------------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Split a compact word list; "_" joins the words of a multi-word entry."""
    return [word.replace("_", " ") for word in text.split()]


_COLOURS = _words("red green blue yellow orange purple black white grey brown pink cyan magenta violet golden silver")
_SHAPES = _words("circle square triangle rectangle star hexagon ellipse diamond cross line arrow heart oval polygon")
_OBJECTS = _words("ball box cup car tree house dog cat bird flower chair table book lamp boat kite clock apple")
_SIZES = _words("small large tiny big medium huge thin wide narrow long short tall bright dark striped dotted")
_POSITIONS = _words(
    "on_the_left on_the_right at_the_top at_the_bottom in_the_centre in_the_middle near_the_corner above_the_line "
    "below_the_square next_to_the_circle behind_the_triangle between_the_two_stars inside_the_box outside_the_frame "
    "under_the_table beside_the_tree"
)
_COUNTS = _words("zero one two three four five six seven eight nine ten eleven twelve twenty several many few")
_SEISMIC = _words(
    "trace traces arrival arrivals P_wave S_wave surface_wave amplitude frequency station stations event events "
    "coordinates magnitude epicentre hypocentre depth latitude longitude waveform seismogram spectrogram "
    "earthquake aftershock foreshock tremor noise signal channel component sensor seismometer network phase "
    "onset peak window sample samples velocity displacement acceleration polarity azimuth distance fault "
    "rupture catalogue detection picker residual travel_time sampling_rate bandpass filter"
)
_SCENES = _words(
    "park garden kitchen street beach forest office classroom desert mountain river harbour laboratory observatory "
    "village city field bridge museum station_hall"
)
_VERBS = _words("shows records detects contains displays measures reveals marks picks locates filters estimates")
_QUESTIONS = (
    "What colour is the {size} {shape}?",
    "How many {shape}s are there in the image?",
    "Is the {colour} {shape} {position}?",
    "Where is the {size} {colour} {object}?",
    "Which shape is {position}?",
    "Count the {colour} objects in the picture.",
    "Describe the {object} {position}.",
    "What is the {seismic} at station {station}?",
    "When does the {seismic} reach the station?",
    "How many {seismic} are visible in this trace?",
    "Is there a P wave arrival before {number} seconds?",
    "What are the coordinates of the event?",
    "Please describe this photograph in detail.",
    "Can you tell me what happens after the first arrival?",
)
_ANSWERS = (
    "The {size} {shape} is {colour}.",
    "There are {count} {shape}s.",
    "Yes, the {colour} {object} is {position}.",
    "No, it is {position}.",
    "The {shape} {position} is {size} and {colour}.",
    "I can see {count} {colour} {object}s and {count2} {shape}s.",
    "The {seismic} {verb} a peak of {number} at {frequency} Hz.",
    "Station {station} {verb} the S wave at {number} s, {count} seconds after the P wave.",
    "The event is located at ({lat}, {lon}) with a depth of {depth} km and magnitude {magnitude}.",
    "The amplitude is {number} and the dominant frequency is {frequency} Hz.",
    "Answer: {count}.",
    "It's {colour}; they're {size}, and we'll count {count2} of them!",
    "A photograph of a {size} {colour} {object} {position} in a {scene}.",
    "This picture was taken in the {scene}, where {count} people were walking slowly.",
    "The seismologist noticed that the {seismic} became stronger during the night.",
    "Because the instrument was calibrated yesterday, the measurement should be reliable.",
    "Although the weather changed quickly, everyone remained comfortable and curious.",
)
_LETTERS = "ABCDEFGHKLMNPRSTWXYZ"


def _corpus() -> Iterator[str]:
    """Yield a deterministic, varied English corpus: questions and answers about shapes and seismic traces."""
    # A private Random: the caller's global RNG state is left alone, and the stream is fixed by the seed.
    rng = random.Random(SEED)

    def number() -> str:
        return rng.choice((f"{rng.random():.2f}", f"{rng.uniform(0, 100):.1f}", str(rng.randrange(0, 2000))))

    for i in range(4000):
        slots = {
            "colour": rng.choice(_COLOURS),
            "shape": rng.choice(_SHAPES),
            "object": rng.choice(_OBJECTS),
            "size": rng.choice(_SIZES),
            "position": rng.choice(_POSITIONS),
            "count": rng.choice(_COUNTS + [str(n) for n in range(13)]),
            "count2": rng.choice(_COUNTS),
            "seismic": rng.choice(_SEISMIC),
            "verb": rng.choice(_VERBS),
            "scene": rng.choice(_SCENES),
            "station": f"{rng.choice(_LETTERS)}{rng.choice(_LETTERS)}{rng.randrange(10, 99)}",
            "number": number(),
            "frequency": f"{rng.uniform(0.5, 40):.1f}",
            "lat": f"{rng.uniform(-90, 90):.3f}",
            "lon": f"{rng.uniform(-180, 180):.3f}",
            "depth": f"{rng.uniform(0, 700):.1f}",
            "magnitude": f"{rng.uniform(1, 8):.1f}",
        }
        question = rng.choice(_QUESTIONS).format(**slots)
        answer = rng.choice(_ANSWERS).format(**slots)
        # Vary the layout so that newlines, capitals and chat role words are seen too.
        yield (
            question,
            f"USER: {question}\nASSISTANT: {answer}",
            f"user\n{question}\nmodel\n{answer}",
            f"{question} {answer}",
            answer.upper(),
            answer.capitalize(),
        )[i % 6]


# --------------------------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerSpec:
    """How one family's tokenizer is laid out; ``builder`` picks SentencePiece-style or byte-level BPE."""

    builder: Callable[[TokenizerSpec], Tokenizer]
    learned_size: int  # at most this many tokens learned by BPE (characters and merges), besides specials and bytes
    specials: tuple[str, ...]  # all special tokens, in id order (before or after the learned vocabulary)
    bos: str
    eos: str
    unk: str | None = None
    pad: str | None = None
    # SentencePiece-style: LLaMA adds a dummy "▁" before the text, Gemma does not.
    prepend_space: bool = True
    # Characters kept out of the learned vocabulary, so that they encode as byte tokens ("\n" is <0x0A> in LLaMA).
    unlearned_chars: str = ""
    chat_template: str | None = None
    model_max_length: int | None = None


# SentencePiece splits pieces at whitespace, at letter/punctuation boundaries and (LLaMA, Gemma) between digits.
_SPIECE_PIECE = r"▁?\p{L}+|▁?[^\p{L}\p{N}▁]+|\p{N}|▁"


def _train_bpe(
    pre_tokenizer: pre_tokenizers.PreTokenizer, size: int, alphabet: list[str], unlearned: str = ""
) -> tuple[list[str], list[tuple[str, str]]]:
    """Train a BPE on the generated corpus; return its vocabulary (in id order) and merges."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=size, initial_alphabet=alphabet, show_progress=False)
    drop = str.maketrans(dict.fromkeys(unlearned, " "))
    tokenizer.train_from_iterator((text.translate(drop) for text in _corpus()), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = sorted(model["vocab"], key=model["vocab"].__getitem__)
    return vocab, [tuple(m) for m in model["merges"]]


def sentencepiece_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """A BPE laid out like a SentencePiece model converted by transformers: specials, 256 byte tokens, pieces."""
    training_split = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(_SPIECE_SPACE, prepend_scheme="first" if spec.prepend_space else "never"),
            pre_tokenizers.Split(Regex(_SPIECE_PIECE), behavior="isolated"),
        ]
    )
    learned, merges = _train_bpe(training_split, spec.learned_size, [], spec.unlearned_chars)
    ordered = [*spec.specials, *(f"<0x{b:02X}>" for b in range(256)), *learned]
    vocab = {token: i for i, token in enumerate(ordered)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=spec.unk, fuse_unk=True, byte_fallback=True))
    decoder_steps = [decoders.Replace(_SPIECE_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if spec.prepend_space:
        # LLaMA: "▁" is prepended to the whole text (no split) and that one space is stripped again when decoding.
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(_SPIECE_SPACE, prepend_scheme="first", split=False)
        decoder_steps.append(decoders.Strip(" ", 1, 0))
    else:
        # Gemma: spaces become "▁" in the normalizer; nothing is prepended or split.
        tokenizer.normalizer = normalizers.Replace(" ", _SPIECE_SPACE)
    tokenizer.decoder = decoders.Sequence(decoder_steps)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec.specials])
    tokenizer.post_processor = _prepend_bos(tokenizer, spec.bos, pair_bos_type_id=1)
    return tokenizer


def bytelevel_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """A tiktoken-style byte-level BPE like LLaMA-3's: learned vocabulary first, special tokens after it."""
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    # The byte alphabet comes out of a hash set; sort it so that training is reproducible.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    learned, merges = _train_bpe(pre_tokenizer, spec.learned_size, alphabet, spec.unlearned_chars)
    vocab = {token: i for i, token in enumerate(learned)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec.specials])
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            _prepend_bos(tokenizer, spec.bos, pair_bos_type_id=0),
        ]
    )
    return tokenizer


def _prepend_bos(tokenizer: Tokenizer, bos: str, pair_bos_type_id: int) -> processors.TemplateProcessing:
    """The post-processor of LLaMA and Gemma: BOS before each sequence, no EOS (the type id of the second BOS of a
    pair is 1 in the SentencePiece conversions and 0 in LLaMA-3's)."""
    return processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos}:{pair_bos_type_id} $B:1",
        special_tokens=[(bos, tokenizer.token_to_id(bos))],
    )


def build_tokenizer(spec: TokenizerSpec) -> PreTrainedTokenizerFast:
    """Wrap the family's ``tokenizers`` pipeline in a transformers tokenizer with its special tokens declared."""
    limits = {} if spec.model_max_length is None else {"model_max_length": spec.model_max_length}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=spec.builder(spec),
        bos_token=spec.bos,
        eos_token=spec.eos,
        unk_token=spec.unk,
        pad_token=spec.pad,
        # transformers ignores (and warns about) space clean-up for BPE tokenizers; keep decoding exact.
        clean_up_tokenization_spaces=False,
        **limits,
    )
    tokenizer.chat_template = spec.chat_template
    return tokenizer


__all__ = ["SEED", "TokenizerSpec", "build_tokenizer", "bytelevel_tokenizer", "sentencepiece_tokenizer"]
