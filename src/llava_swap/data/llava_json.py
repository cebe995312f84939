"""Loaders from raw data to validated `Record`s: LLaVA's JSON format and Hugging Face datasets; and LLaVA's writer.

LLaVA's format is a JSON list of `{"id", "image": "rel/path.png", "conversations": [{"from": "human"|"gpt"|"system",
"value": "<image>\\n..."}]}`; a dataset holds a column of images and a column of transformers-style messages. Both
become the same Records, validated the same way, with one policy for bad records: stop at the first one
(on_bad_record="error") or skip it and say so (on_bad_record="skip"). Record ids must be unique, because analyses
match predictions to records by id.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .records import (
    IMAGE_ERRORS,
    BadRecordError,
    LoadedData,
    Record,
    SkippedRecord,
    parts_to_text,
    text_to_parts,
    validate_record,
)

logger = logging.getLogger(__name__)

ON_BAD_RECORD = ("error", "skip")
FROM_TO_ROLE = {"human": "user", "gpt": "assistant", "system": "system"}
ROLE_TO_FROM = {role: name for name, role in FROM_TO_ROLE.items()}
# Keys of a LLaVA record that the loader turns into Record fields; every other key is kept in Record.meta.
LLAVA_KEYS = ("id", "image", "images", "conversations")


# Checking a record opens its images; past this many records (LLaVA-665k takes a minute or more) show progress.
PROGRESS_FROM = 10_000


def _checking(items, total: int, name: str, doing: str = "checking"):
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=f"{doing} {name}", unit=" records", disable=total < PROGRESS_FROM)


# Images are checked by this many threads: opening and verifying a file is mostly waiting on the disk (on network
# storage, mostly waiting), and PIL releases the GIL while it decodes.
CHECK_THREADS = min(32, 4 * (os.cpu_count() or 1))


class _Collector:
    """Builds records one by one, then checks them (images in parallel threads), applying the on_bad_record policy
    and the unique-id rule in record order: the first problem in the file is the one an error names."""

    def __init__(self, source: str, on_bad_record: str, image_root: Path | None = None, image_check: str = "verify"):
        self.source = source
        self.on_bad_record = on_bad_record
        self.image_root = image_root
        self.image_check = image_check
        self.pending: list[Record | BadRecordError] = []  # in order: built records, or why one could not be built
        self.positions: dict[str, int] = {}

    def add(self, position: int, build: Callable[[], Record], what: str) -> None:
        try:
            record = build()
            first = self.positions.setdefault(record.id, position)
            if first != position:
                raise BadRecordError(
                    record.id,
                    self.source,
                    f"its id is also used by {what} {first} ({what} {position} repeats it, counting from 0): ids must "
                    "be unique so that results can be matched to records; rename or remove one of them",
                )
        except BadRecordError as error:
            if self.on_bad_record == "error" and not self.pending:
                raise  # nothing before it to check first
            self.pending.append(error)
            return
        self.pending.append(record)

    def _problem(self, item: Record | BadRecordError) -> BadRecordError | None:
        if isinstance(item, BadRecordError):
            return item
        try:
            validate_record(item, self.image_root, self.image_check)
        except BadRecordError as error:
            return error
        return None

    def result(self) -> LoadedData:
        from concurrent.futures import ThreadPoolExecutor

        records: list[Record] = []
        skipped: list[SkippedRecord] = []
        with ThreadPoolExecutor(CHECK_THREADS) as pool:
            # map() yields in record order: with on_bad_record="error" the first bad record raises, and the checks
            # not started yet are cancelled.
            problems = pool.map(self._problem, self.pending)
            try:
                checked = zip(self.pending, problems, strict=True)
                for item, problem in _checking(checked, len(self.pending), Path(self.source).name):
                    if problem is not None:
                        if self.on_bad_record == "error":
                            raise problem
                        skipped.append(SkippedRecord.from_error(problem))
                        continue
                    # Paths stay as written until checked, so that errors show them; kept records get normalised ones.
                    item.images = [os.path.normpath(im) if isinstance(im, str) else im for im in item.images]
                    records.append(item)
            except BadRecordError:
                pool.shutdown(cancel_futures=True)
                raise
        if skipped:
            logger.warning(
                "Skipped %d of %d records in %s (on_bad_record='skip'); the first: %s. "
                "LoadedData.write_skipped(out_dir) lists them all.",
                len(skipped),
                len(self.pending),
                self.source,
                f"record {skipped[0].id!r}: {skipped[0].problem}",
            )
        return LoadedData(records, skipped)


def load_llava_json(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    on_bad_record: str = "error",
    image_check: str = "verify",
) -> LoadedData:
    """Loads a LLaVA-format JSON file into validated Records (image paths relative to `image_root`).

    `image_root` defaults to the JSON file's folder. Roles map human -> user, gpt -> assistant, system -> system.
    Keys other than id/image/images/conversations are kept in `Record.meta`. A record without an "id" gets
    "<file name>#<index>". Problems with the file itself (missing, not JSON, not a list) raise whatever
    `on_bad_record` says, since there is no record to skip. Images are checked in parallel threads, with a progress
    bar from 10,000 records: `image_check="verify"` (PIL's verify: the whole file is read and its structure
    checked) or "header" (the file opens as an image: fast on network storage, but a truncated file passes).
    """
    _check_on_bad_record(on_bad_record)
    _check_image_check(image_check)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LLaVA JSON file {path} does not exist: check the path.")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        hint = " (one JSON object per line, JSONL, is not LLaVA's format)" if error.msg == "Extra data" else ""
        raise ValueError(
            f"{path} is not valid JSON ({error}){hint}: LLaVA data is one JSON list of records; fix the file."
        ) from error
    if not isinstance(entries, list):
        raise ValueError(
            f"{path} holds a JSON {type(entries).__name__}, not a list of records: LLaVA data is a JSON list of "
            '{"id": ..., "image": ..., "conversations": [...]} objects.'
        )
    root = Path(os.path.abspath(image_root if image_root is not None else path.parent))
    collector = _Collector(str(path), on_bad_record, root, image_check)
    for index, entry in enumerate(entries):
        collector.add(index, lambda entry=entry, index=index: _llava_record(entry, index, path, root), "entry")
    return collector.result()


def _llava_record(entry: object, index: int, path: Path, root: Path) -> Record:
    source = str(path)
    fallback_id = f"{path.name}#{index}"
    if not isinstance(entry, dict):
        raise BadRecordError(
            fallback_id,
            source,
            f"entry {index} is a JSON {type(entry).__name__}, not a record: each entry must be an object with "
            '"id", "image" and "conversations"',
        )
    record_id = fallback_id if entry.get("id") is None else str(entry["id"])

    def fail(problem: str) -> BadRecordError:
        return BadRecordError(record_id, source, problem)

    if "conversations" not in entry:
        raise fail(
            'it has no "conversations": each record needs "conversations": [{"from": "human", "value": ...}, '
            '{"from": "gpt", "value": ...}]'
        )
    conversations = entry["conversations"]
    if not isinstance(conversations, list):
        raise fail(f'"conversations" is a {type(conversations).__name__}, not a list of turns')
    messages = []
    for number, turn in enumerate(conversations, 1):
        if not isinstance(turn, dict):
            raise fail(f'turn {number} is a {type(turn).__name__}, not an object with "from" and "value"')
        speaker = turn.get("from")
        if speaker not in FROM_TO_ROLE:
            raise fail(f'turn {number} has unknown role "from": {speaker!r}: use one of "human", "gpt", "system"')
        value = turn.get("value")
        if not isinstance(value, str):
            raise fail(f'turn {number} ({speaker}) has a "value" of type {type(value).__name__}: it must be a string')
        extra = {key: item for key, item in turn.items() if key not in ("from", "value")}
        messages.append({**extra, "role": FROM_TO_ROLE[speaker], "content": text_to_parts(value)})

    if "image" in entry and "images" in entry:
        raise fail('it has both "image" and "images": give its images under one of them')
    value = entry.get("image", entry.get("images"))
    names = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise fail(f"its images {value!r} are not a path or a list of paths (relative to the image root {root})")
    # Joined, not yet normalised, so that an error shows the path as written; normalised once it is valid.
    images = [os.path.join(root, name) for name in names]
    meta = {key: item for key, item in entry.items() if key not in LLAVA_KEYS}
    return Record(record_id, images, messages, source, meta)


def load_hf_dataset(
    dataset,
    image_column: str = "images",
    messages_column: str = "messages",
    id_column: str | None = None,
    on_bad_record: str = "error",
    name: str | None = None,
) -> LoadedData:
    """Loads a `datasets.Dataset` (or a list of dicts) of images and transformers-style messages into Records.

    Each row holds a list of images (PIL images, file paths, or datasets' {"bytes", "path"} dicts) and a list of
    messages whose content is a string with `<image>` markers or a list of parts; an image part may also carry its
    image inline ({"type": "image", "image": <PIL image or path>}). Columns other than the image, messages and id
    columns are kept in `Record.meta`. Records are named `name`, the dataset's name, or "dataset".
    """
    import datasets

    _check_on_bad_record(on_bad_record)
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        raise TypeError(f"Got a dataset dictionary with splits {list(dataset)}: pass one split, e.g. dataset['train'].")
    info = getattr(dataset, "info", None)
    source = name or getattr(info, "dataset_name", None) or "dataset"
    columns = (image_column, messages_column, id_column)
    collector = _Collector(source, on_bad_record)
    if isinstance(dataset, datasets.Dataset):
        for column in (messages_column, id_column):
            if column is not None and column not in dataset.column_names:
                raise ValueError(
                    f"{source} has no column {column!r} (its columns: {dataset.column_names}): pass the right "
                    "messages_column / id_column."
                )
        # Ids come from the id column alone, so that a row whose images fail to decode can still be named.
        ids = list(dataset[id_column]) if id_column is not None else [None] * len(dataset)
        # Decoding rows is the slow part of a dataset; the checks that follow show their own bar.
        for index in _checking(range(len(dataset)), len(dataset), source, "reading"):
            record_id = f"{source}#{index}" if ids[index] is None else str(ids[index])
            collector.add(
                index,
                lambda index=index, record_id=record_id: _hf_record(
                    _decoded_row(dataset, index, record_id, source), record_id, source, columns
                ),
                "row",
            )
    elif isinstance(dataset, Sequence) and not isinstance(dataset, (str, bytes)):
        for index, row in _checking(enumerate(dataset), len(dataset), source, "reading"):
            value = row.get(id_column) if id_column is not None and isinstance(row, dict) else None
            record_id = f"{source}#{index}" if value is None else str(value)
            collector.add(
                index, lambda row=row, record_id=record_id: _hf_record(row, record_id, source, columns), "row"
            )
    else:
        raise TypeError(
            f"load_hf_dataset takes a datasets.Dataset or a list of dicts, not a {type(dataset).__name__} "
            "(an IterableDataset cannot skip a row that fails to decode: load it as a Dataset)."
        )
    return collector.result()


def _decoded_row(dataset, index: int, record_id: str, source: str) -> dict:
    try:
        return dataset[index]
    except IMAGE_ERRORS as error:
        # datasets decodes every image of a row when the row is read; a corrupt one fails the whole row.
        raise BadRecordError(
            record_id,
            source,
            f"its images could not be decoded ({type(error).__name__}: {error}): fix or remove the broken image",
        ) from error


def _hf_record(row: object, record_id: str, source: str, columns: tuple[str, str, str | None]) -> Record:
    image_column, messages_column, id_column = columns

    def fail(problem: str) -> BadRecordError:
        return BadRecordError(record_id, source, problem)

    if not isinstance(row, dict):
        raise fail(f"the row is a {type(row).__name__}, not a dict of columns")
    raw_messages = row.get(messages_column)
    if raw_messages is None:
        raise fail(f"it has no {messages_column!r} (keys: {sorted(row)}): pass messages_column= the right column")
    if not isinstance(raw_messages, list):
        raise fail(f"its {messages_column!r} is a {type(raw_messages).__name__}, not a list of messages")
    inline: list = []
    indexes: list = []
    messages = []
    for number, message in enumerate(raw_messages, 1):
        if not isinstance(message, dict):
            raise fail(f"turn {number} is a {type(message).__name__}, not a dict with 'role' and 'content'")
        # Arrow gives every message every key any message had, None where absent: those are not data.
        message = {key: value for key, value in message.items() if value is not None}
        content = message.get("content", [])
        if isinstance(content, str):
            parts = text_to_parts(content)
        elif isinstance(content, list):
            parts = []
            for part in content:
                problem = _collect_part(part, parts, inline, indexes)
                if problem is not None:
                    raise fail(f"turn {number} {problem}")
        else:
            raise fail(f"turn {number} has content of type {type(content).__name__}: give a string or a list of parts")
        messages.append({**message, "content": parts})

    if any(index is not None for index in indexes) and indexes != list(range(len(indexes))):
        raise fail(
            f"its image parts carry 'index' values {indexes}, not 0, 1, 2, ... in order: reorder the images to "
            "follow the image parts"
        )
    images = row.get(image_column)
    images = [] if images is None else list(images) if isinstance(images, (list, tuple)) else [images]
    if inline and images:
        raise fail(
            f"it has images both inline in its image parts ({len(inline)}) and in {image_column!r} ({len(images)}): "
            "give them in one place"
        )
    n_parts = sum(part["type"] == "image" for message in messages for part in message["content"])
    if n_parts and not inline and image_column not in row:
        raise fail(
            f"it has {n_parts} image part(s) but no {image_column!r} column (keys: {sorted(row)}): pass "
            "image_column= the column holding the images"
        )
    images = [_image_value(number, image, fail) for number, image in enumerate(inline or images, 1)]
    meta = {key: value for key, value in row.items() if key not in columns}
    return Record(record_id, images, messages, source, meta)


def _collect_part(part: object, parts: list[dict], inline: list, indexes: list) -> str | None:
    """Appends a content part, normalised, to `parts`; returns a problem (without the turn) or None."""
    if not isinstance(part, dict):
        return f"has a content part of type {type(part).__name__}: parts must be dicts"
    part = {key: value for key, value in part.items() if value is not None}
    kind = part.get("type")
    if kind == "text":
        if set(part) - {"type", "text"} or not isinstance(part.get("text"), str):
            return f"has a text part {part!r}: text parts are {{'type': 'text', 'text': <string>}}"
        parts.extend(text_to_parts(part["text"]))
    elif kind == "image":
        if set(part) - {"type", "image", "path", "index"}:
            return f"has an image part with unsupported keys {part!r}: use 'image' (a PIL image or path) or 'path'"
        if "image" in part and "path" in part:
            return f"has an image part with both 'image' and 'path' {part!r}: give one"
        if "image" in part or "path" in part:
            inline.append(part.get("image", part.get("path")))
        indexes.append(part.get("index"))
        parts.append({"type": "image"})
    else:
        return f"has an unsupported content part {part!r}: only 'image' and 'text' parts are supported"
    return None


def _image_value(number: int, image: object, fail: Callable[[str], BadRecordError]) -> object:
    """A row's image as a Record holds it: PIL images as they are, paths absolute, datasets' dicts decoded."""
    if isinstance(image, (str, os.PathLike)):
        return os.path.abspath(image)
    if isinstance(image, dict) and ("bytes" in image or "path" in image):
        import datasets

        # datasets' own decoder, so the image is what `dataset[i]` would give (EXIF rotation applied).
        try:
            return datasets.Image().decode_example(image)
        except IMAGE_ERRORS as error:
            raise fail(
                f"image {number} could not be decoded ({type(error).__name__}: {error}): fix or remove it"
            ) from error
    return image


def write_llava_json(records: Sequence[Record], path: str | os.PathLike, image_root: str | os.PathLike) -> Path:
    """Writes records whose images are files under `image_root` as a LLaVA JSON file (the loader's inverse).

    Image paths are written relative to `image_root`; `meta` keys go back to the top level of each record. The
    output is deterministic: sorted keys, fixed indentation, UTF-8.
    """
    root = Path(os.path.abspath(image_root))
    entries = [_llava_entry(record, root) for record in records]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _llava_entry(record: Record, root: Path) -> dict:
    def fail(problem: str) -> BadRecordError:
        return BadRecordError(record.id, record.source, problem)

    names = []
    for number, image in enumerate(record.images, 1):
        if not isinstance(image, (str, os.PathLike)):
            raise fail(
                f"image {number} is an in-memory {type(image).__name__}, but LLaVA JSON stores file paths: save "
                f"the image under {root} and put its path in the record"
            )
        relative = os.path.relpath(os.path.abspath(image), root)  # Record paths are absolute or relative to the cwd
        if relative == os.pardir or relative.startswith(os.pardir + os.sep):
            raise fail(f"image {number} {str(image)!r} is outside the image root {root}: move it under the root")
        names.append(Path(relative).as_posix())
    conversations = []
    for number, message in enumerate(record.messages, 1):
        if message.get("role") not in ROLE_TO_FROM:
            raise fail(f"turn {number} has role {message.get('role')!r}, which LLaVA's format cannot store")
        extra = {key: value for key, value in message.items() if key not in ("role", "content")}
        conversations.append(
            {**extra, "from": ROLE_TO_FROM[message["role"]], "value": parts_to_text(message["content"])}
        )
    clashes = sorted(set(record.meta) & set(LLAVA_KEYS))
    if clashes:
        raise fail(f"its meta has keys {clashes}, which LLaVA's format reserves: rename them")
    entry = {**record.meta, "id": record.id, "conversations": conversations}
    if names:
        entry["image"] = names[0] if len(names) == 1 else names
    return entry


IMAGE_CHECKS = ("verify", "header")


def _check_image_check(value: str) -> None:
    if value not in IMAGE_CHECKS:
        raise ValueError(f"image_check={value!r} is not one of {IMAGE_CHECKS}.")


def _check_on_bad_record(value: str) -> None:
    if value not in ON_BAD_RECORD:
        raise ValueError(f"Unknown on_bad_record={value!r}: use one of {', '.join(map(repr, ON_BAD_RECORD))}.")


__all__ = ["FROM_TO_ROLE", "ON_BAD_RECORD", "load_hf_dataset", "load_llava_json", "write_llava_json"]
