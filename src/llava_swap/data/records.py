"""The one internal format every data source is normalised to: a validated `Record` per conversation.

A `Record` is one conversation in transformers' chat format plus its images, one image per `{"type": "image"}` part,
in order. Loaders (`llava_json`) build Records from raw data and check each with `validate_record` before anything
trains on or evaluates it. A bad record either stops the load with a `BadRecordError` naming the record, its file and
the problem, or (on_bad_record="skip") lands in `LoadedData.skipped` and in skipped_records.json: never dropped
silently. Validation is about content only (roles, turn order, images); it needs no tokenizer.
"""

from __future__ import annotations

import io
import json
import os
from copy import deepcopy
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from ..families import IMAGE_TOKEN

ROLES = ("system", "user", "assistant")
SKIPPED_FILE = "skipped_records.json"
# PIL's ways of saying "not an image" or "a broken one": unidentified/truncated (OSError), bad chunks (SyntaxError),
# bad header fields (ValueError), absurd sizes (DecompressionBombError, which is none of those).
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class Record:
    """One conversation and its images, in the format the collator and the evaluator read.

    `images` holds, for each `{"type": "image"}` part of `messages` in order, either the absolute path of an image
    file or a PIL image (from a Hugging Face dataset). `meta` keeps any extra keys of the raw record (reference
    answers, question types, ...) so that nothing in the source data is lost on the way to an analysis.
    """

    id: str
    images: list  # str absolute paths or PIL.Image.Image objects
    messages: list[dict]  # [{"role": ..., "content": [{"type": "image"} | {"type": "text", "text": ...}]}]
    source: str  # the file (or dataset name) the record came from, for error messages
    meta: dict = field(default_factory=dict)

    def to_row(self, copy: bool = True) -> dict:
        """The record as a plain dict, ready for `datasets.Dataset.from_list` or the collator: copies, or with
        `copy=False` the record's own messages and meta (for a caller that drops the record, as training does: a
        deep copy of LLaVA-665k's conversations takes about a minute)."""
        clone = deepcopy if copy else lambda value: value
        return {
            "id": self.id,
            "images": list(self.images),
            "messages": clone(self.messages),
            "source": self.source,
            "meta": clone(self.meta),
        }

    @classmethod
    def from_row(cls, row: dict) -> Record:
        """The inverse of `to_row`, also for rows read back from a `datasets.Dataset`.

        Arrow stores a column of dicts as one struct type, so a row read back from a Dataset carries every key any
        row had, set to None where it was absent (an image part comes back as `{"type": "image", "text": None}`).
        Those None keys are removed here; they were never data.
        """
        missing = [key for key in ("id", "images", "messages", "source") if key not in row]
        if missing:
            raise ValueError(
                f"A row with keys {sorted(row)} lacks {missing}: rows must come from Record.to_row (or load raw data "
                "with load_llava_json / load_hf_dataset)."
            )
        messages = []
        for message in row["messages"]:
            message = _without_none(message)
            content = message.get("content")
            if isinstance(content, str):
                content = text_to_parts(content)
            elif isinstance(content, list):
                content = [_without_none(part) for part in content]
            messages.append({**message, "content": content})
        return cls(
            id=str(row["id"]),
            images=list(row["images"] or []),
            messages=messages,
            source=str(row["source"]),
            meta=dict(row.get("meta") or {}),
        )


class BadRecordError(ValueError):
    """A record that cannot be used as it is: names the record, the file it came from and the problem."""

    def __init__(self, record_id: str, source: str, problem: str):
        self.record_id = record_id
        self.source = source
        self.problem = problem
        super().__init__(f"record {record_id!r} in {source}: {problem}")

    def __reduce__(self):
        # The default pickling would call BadRecordError(message); worker processes (datasets.map) need all three.
        return type(self), (self.record_id, self.source, self.problem)


@dataclass
class SkippedRecord:
    """A record left out by on_bad_record="skip", and why."""

    id: str
    source: str
    problem: str

    @classmethod
    def from_error(cls, error: BadRecordError) -> SkippedRecord:
        return cls(error.record_id, error.source, error.problem)


@dataclass
class LoadedData:
    """The records a loader kept, in source order, and the ones it skipped."""

    records: list[Record]
    skipped: list[SkippedRecord] = field(default_factory=list)

    def write_skipped(self, out_dir: str | os.PathLike) -> Path | None:
        """Writes `out_dir/skipped_records.json` (a list of {id, source, problem}) when any record was skipped.

        With none skipped, returns None and removes a skipped_records.json left by an earlier run into the same
        folder, which would otherwise describe data this run did not skip.
        """
        path = Path(out_dir) / SKIPPED_FILE
        if not self.skipped:
            path.unlink(missing_ok=True)
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = [asdict(skipped) for skipped in self.skipped]
        path.write_text(json.dumps(entries, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def text_to_parts(text: str) -> list[dict]:
    """Splits text with `<image>` markers into content parts, one `{"type": "image"}` per marker, in place.

    LLaVA's preprocessing puts the marker on its own line ("<image>\\nWhat is this?"), so exactly one newline right
    after a marker belongs to the marker and is removed; any other whitespace is kept as written. Empty text between
    markers makes no part.
    """
    parts: list[dict] = []
    for index, piece in enumerate(text.split(IMAGE_TOKEN)):
        if index > 0:
            parts.append({"type": "image"})
            if piece.startswith("\n"):
                piece = piece[1:]
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def parts_to_text(parts: list[dict]) -> str:
    """The inverse of `text_to_parts`: a marker per image part, followed by a newline when text comes next."""
    pieces = []
    for index, part in enumerate(parts):
        if part.get("type") == "image":
            pieces.append(IMAGE_TOKEN)
            following = parts[index + 1] if index + 1 < len(parts) else None
            if following is not None and following.get("type") == "text":
                pieces.append("\n")
        else:
            pieces.append(part["text"])
    return "".join(pieces)


def validate_record(record: Record, image_root: str | os.PathLike | None = None, image_check: str = "verify") -> None:
    """Checks a record's conversation and images; raises `BadRecordError` naming the first problem found.

    `image_check`: "verify" reads each image file through PIL's verify; "header" only opens it (its header parses).

    With `image_root`, relative image paths are taken relative to it and every image path must stay inside it
    (after `..` and the like are resolved): a record cannot make training read files elsewhere.
    """
    problem = _conversation_problem(record.messages)
    if problem is None:
        n_parts = sum(part.get("type") == "image" for message in record.messages for part in message["content"])
        if n_parts != len(record.images):
            problem = (
                f"the conversation has {n_parts} image part(s) (<image> markers) but the record has "
                f"{len(record.images)} image(s): each image needs exactly one marker, in the order of the images"
            )
    if problem is None:
        root = None if image_root is None else Path(os.path.abspath(image_root))
        for number, image in enumerate(record.images, 1):
            problem = _image_problem(number, image, root, image_check)
            if problem is not None:
                break
    if problem is not None:
        raise BadRecordError(record.id, record.source, problem)


def _conversation_problem(messages: list[dict]) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "the conversation is empty: give it a user turn and an assistant turn, or remove the record"
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            return f"turn {number} is a {type(message).__name__}, not a dict with 'role' and 'content'"
        role = message.get("role")
        if role not in ROLES:
            return f"turn {number} has unknown role {role!r}: use one of {', '.join(map(repr, ROLES))}"
        problem = _content_problem(message.get("content"))
        if problem is not None:
            return f"turn {number} ({role}) {problem}"
    roles = [message["role"] for message in messages]
    start = 1 if roles[0] == "system" else 0
    if roles[start : start + 1] != ["user"]:
        opening = " then ".join(roles[: start + 1])
        return (
            f"the conversation starts with {opening}: it must start with a user turn (optionally after one system turn)"
        )
    for index in range(1, len(roles)):
        if roles[index] == "system":
            return f"turn {index + 1} is a system turn: only the first turn may be a system turn"
        if roles[index] == roles[index - 1]:
            return (
                f"turns {index} and {index + 1} are both {roles[index]} turns: user and assistant turns must "
                "alternate (merge the two turns into one)"
            )
    if "assistant" not in roles:
        return (
            "the conversation has no assistant turn, so there is nothing to learn: add the answer or remove the record"
        )
    return None


def _content_problem(content: object) -> str | None:
    if not isinstance(content, list):
        return f"has content of type {type(content).__name__}: content must be a list of image and text parts"
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                return f"has a text part without a string 'text': {part!r}"
            if IMAGE_TOKEN in part["text"]:
                return (
                    f"has the image marker {IMAGE_TOKEN!r} inside a text part: use a {{'type': 'image'}} part instead"
                )
        elif kind != "image":
            return f"has an unsupported content part {part!r}: parts must be {{'type': 'image'}} or {{'type': 'text', 'text': ...}}"
    if not any(part["type"] == "image" or part["text"].strip() for part in content):
        return "has empty content: give it text (or an image), or remove the turn"
    return None


def _image_problem(number: int, image: object, root: Path | None, image_check: str = "verify") -> str | None:
    if isinstance(image, Image.Image):
        return _pil_image_problem(number, image)
    if not isinstance(image, (str, os.PathLike)):
        return f"image {number} is a {type(image).__name__}: give the path of an image file or a PIL image"
    path = Path(image)
    if root is not None and not path.is_absolute():
        path = root / path
    # Lexical resolution (`..` collapsed, symlinks not followed): a path written in the data cannot climb out of the
    # root, while symlinks the dataset's owner put inside it (the Hugging Face cache links every file to a blob
    # outside the snapshot folder) still work. What is checked here is also what gets opened.
    resolved = Path(os.path.abspath(path))
    if root is not None and not resolved.is_relative_to(root):
        return (
            f"image {number} path {str(image)!r} resolves to {resolved}, outside the image root {root}: image paths "
            "must stay inside image_root (fix the path, or pass the folder holding the images as image_root)"
        )
    if not resolved.is_file():
        what = "is not a file" if resolved.exists() else "does not exist"
        return f"image {number} file {resolved} {what}: fix the image path in the record or the image_root"
    try:
        with Image.open(resolved) as opened:
            if image_check == "verify":
                opened.verify()
    except IMAGE_ERRORS as error:
        return (
            f"image {number} file {resolved} is not a readable image ({type(error).__name__}: {error}): replace the "
            "file or remove the record"
        )
    return None


def _pil_image_problem(number: int, image: Image.Image) -> str | None:
    # A decoded image (or one built in memory) has no pending tiles and is fine as it is. A lazily opened one is
    # checked on a fresh handle, because verify() leaves the image it runs on unusable.
    if not getattr(image, "tile", None):
        return None
    fp = getattr(image, "fp", None)
    filename = getattr(image, "filename", "")
    try:
        if filename and os.path.isfile(filename):
            with Image.open(filename) as fresh:
                fresh.verify()
        elif hasattr(fp, "getvalue"):
            with Image.open(io.BytesIO(fp.getvalue())) as fresh:
                fresh.verify()
        else:
            image.load()
    except IMAGE_ERRORS as error:
        return (
            f"image {number} (a PIL image) is not a readable image ({type(error).__name__}: {error}): fix or remove it"
        )
    return None


def _without_none(mapping: dict) -> dict:
    return {key: value for key, value in mapping.items() if value is not None}


__all__ = [
    "ROLES",
    "SKIPPED_FILE",
    "BadRecordError",
    "LoadedData",
    "Record",
    "SkippedRecord",
    "parts_to_text",
    "text_to_parts",
    "validate_record",
]
