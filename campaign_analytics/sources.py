"""Find payload files and read them as raw records with their provenance.

Accepted: files, directories (searched recursively) and glob patterns. Formats:
NDJSON (``.ndjson``, ``.jsonl``), a JSON array, or one JSON object per file (a
stored POST body), each optionally gzip-compressed (detected by content, not by
name); UTF-8 with or without BOM; LF or CRLF line ends.

Records are handed on in chunks, as Arrow binary arrays of raw bytes, never
parsed here: parsing, validation and flattening are the next module's job. An
NDJSON file is read in large blocks whose lines become array entries over the
block's own memory, so no Python object is made per line. A record longer than
``max_record_bytes`` (a line, an array element or a whole single-body file) is
not handed on: it becomes an oversize marker that the loader quarantines.

A file that breaks off part way (a gzip stream cut short by a capture process
killed mid-write, corrupt compressed data, a JSON array its writer never
closed, a read error) is read up to the break: the records before it are handed on as usual, then :class:`PartialRead`
says where reading stopped, so the loader can quarantine the break and go on
with the other files.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import re
import zlib
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .errors import SourceError

__all__ = ["PayloadFile", "Chunk", "Oversize", "PartialRead", "find_files", "read_chunks", "PAYLOAD_SUFFIXES"]

PAYLOAD_SUFFIXES: Final[tuple[str, ...]] = (".ndjson", ".jsonl", ".json")
_LINE_FORMAT_SUFFIXES: Final[tuple[str, ...]] = (".ndjson", ".jsonl")
_GLOB_CHARS: Final[frozenset[str]] = frozenset("*?[")
_BOM: Final[bytes] = b"\xef\xbb\xbf"
_GZIP_MAGIC: Final[bytes] = b"\x1f\x8b"
_READ_SIZE: Final[int] = 8 << 20
# JSON array and single-body files are parsed whole; past this size use NDJSON.
_MAX_DOCUMENT_BYTES: Final[int] = 1 << 30
# How much of an oversize record is kept, so the rejected row shows what it was.
OVERSIZE_PREVIEW_BYTES: Final[int] = 1024
# What a file that breaks off part way may raise while it is read (gzip.BadGzipFile is an OSError).
_READ_FAILURES: Final[tuple[type[BaseException], ...]] = (OSError, EOFError, zlib.error)
# A position and the first bytes of the record that was being read there.
_Stop = tuple[int, bytes]


class PartialRead(SourceError):
    """A file broke off part way: every record before the break was read, the rest cannot be.

    :func:`read_chunks` raises it after yielding the records before the
    break, so a loader can keep them, quarantine the break as one rejected
    record and go on with the other files.

    Attributes
    ----------
    path
        The file.
    line
        Where reading stopped: the position (line, or array element) of the
        record that was cut short, or of the next record when the break fell
        between two.
    raw
        The first bytes of the record that was cut short (empty when none was).
    reason
        What went wrong, for the rejected record, e.g. ``corrupt or truncated
        gzip: <error>; the records before this point were loaded``.
    hashed
        Whether the ``digest`` given to :func:`read_chunks` saw every byte of
        the file (False when the rest of the file could not be read either).
    """

    def __init__(self, path: str, line: int, raw: bytes, reason: str, *, hashed: bool) -> None:
        super().__init__(f"{path}: {reason} (reading stopped at line {line}).")
        self.path = path
        self.line = line
        self.raw = raw
        self.reason = reason
        self.hashed = hashed


class Oversize(bytes):
    """Stands in a chunk for a record larger than max_record_bytes (its bytes are the first few of it).

    A type of its own, so no input bytes can be mistaken for it.
    """

    size: int

    def __new__(cls, preview: bytes, size: int) -> Oversize:
        marker = super().__new__(cls, preview)
        marker.size = size
        return marker


@dataclass(frozen=True, slots=True)
class PayloadFile:
    """One file to load: where it is, how big, and a hash of its bytes."""

    path: str
    size: int
    mtime_ns: int

    def content_hash(self) -> str:
        """SHA-256 (hex) of the file's bytes as stored on disk."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            while block := handle.read(_READ_SIZE):
                digest.update(block)
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive raw records of one file.

    ``lines`` is an Arrow binary array: entry ``i`` is the record at position
    ``first_line + i`` (the line number in an NDJSON file, the 1-based element
    number in a JSON array, 1 for a single-body file). An entry may still end
    with its line break. Blank entries are kept so positions stay exact; the
    loader passes over them. A record larger than max_record_bytes is a null
    entry, and ``oversize`` maps its index in the chunk to an
    :class:`Oversize` marker.
    """

    source_file: str
    first_line: int
    lines: pa.BinaryArray
    oversize: Mapping[int, Oversize] = field(default_factory=dict)

    @classmethod
    def of(cls, source_file: str, first_line: int, records: Sequence[bytes]) -> Chunk:
        """A chunk from records as bytes (:class:`Oversize` markers among them stand for oversize ones).

        Examples
        --------
        >>> chunk = Chunk.of("a.ndjson", 1, [b'{"trigger": "x"}', b""])
        >>> len(chunk), chunk.lines.to_pylist()
        (2, [b'{"trigger": "x"}', b''])
        """
        oversize = {i: r for i, r in enumerate(records) if type(r) is Oversize}
        lines = pa.array([None if i in oversize else r for i, r in enumerate(records)] if oversize else records, pa.binary())
        return cls(source_file, first_line, lines, oversize)

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def nbytes(self) -> int:
        """Bytes of the records held (oversize ones not counted)."""
        return int(pc.sum(pc.binary_length(self.lines)).as_py() or 0)


def find_files(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[PayloadFile]:
    """Expand files, directories and glob patterns into the payload files to load.

    Parameters
    ----------
    sources
        A path, a directory (searched recursively for ``.ndjson``, ``.jsonl``
        and ``.json`` files, each optionally ending in ``.gz``) or a glob
        pattern (``**`` recurses), or a list of them.

    Returns
    -------
    list[PayloadFile]
        Every file once, in a stable order (sorted by path within each source,
        sources in the order given). Paths stay as given (relative stays
        relative), so provenance columns do not depend on where a checkout lives.

    Raises
    ------
    SourceError
        A path does not exist, a directory cannot be read, or a pattern or
        directory matches no payload file.

    Examples
    --------
    >>> from campaign_analytics.sources import find_files
    >>> [f.path.endswith((".ndjson", ".json", ".gz", ".jsonl")) for f in find_files("data/sample")][:1]
    [True]
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    elif isinstance(sources, (bytes, Mapping)) or not isinstance(sources, Iterable):
        raise SourceError(
            f"Sources must be a path, a glob pattern or a list of them, not {type(sources).__name__}: "
            "pass e.g. 'captures/' or ['a.ndjson', 'b.json.gz']."
        )
    found: dict[str, PayloadFile] = {}
    for source in sources:
        if not isinstance(source, (str, os.PathLike)):
            raise SourceError(
                f"Each source must be a path or a glob pattern (a str or os.PathLike), not {type(source).__name__} "
                f"{source!r}."
            )
        for path in _expand(os.fspath(source)):
            key = os.path.realpath(path)
            if key not in found:
                found[key] = _stat(path)
    if not found:
        raise SourceError("No sources given: pass at least one file, directory or glob pattern.")
    return list(found.values())


def _expand(source: str) -> list[str]:
    if any(char in source for char in _GLOB_CHARS) and not os.path.exists(source):
        matches = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
        if not matches:
            raise SourceError(
                f"The pattern {source!r} matches no file. Check the pattern, or quote it so the "
                "shell does not expand it first."
            )
        return [os.path.normpath(p) for p in matches]
    if os.path.isdir(source):
        return _walk(source)
    if os.path.isfile(source):
        return [os.path.normpath(source)]
    if os.path.islink(source):
        raise SourceError(f"{source!r} is a link to something that does not exist; fix or remove the link.")
    if os.path.lexists(source):
        raise SourceError(f"{source!r} is neither a regular file nor a directory; point at payload files.")
    raise SourceError(f"{source!r} does not exist. Check the path (relative paths start at {os.getcwd()!r}).")


def _walk(directory: str) -> list[str]:
    if not os.access(directory, os.R_OK | os.X_OK):
        raise SourceError(f"The directory {directory!r} cannot be read (permission denied); fix its permissions.")
    paths: list[str] = []

    def _raise(error: OSError) -> None:
        raise SourceError(
            f"The directory {error.filename!r} cannot be read ({error.strerror}); fix its permissions "
            "or leave it out of the sources."
        )

    for root, dirs, files in os.walk(directory, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in files:
            base = name[:-3] if name.endswith(".gz") else name
            full = os.path.join(root, name)
            if not base.endswith(PAYLOAD_SUFFIXES) or name.startswith("."):
                continue
            if os.path.islink(full) and not os.path.exists(full):
                raise SourceError(f"{full!r} is a link to something that does not exist; fix or remove the link.")
            # Regular files only: a named pipe or socket would block or fail the load.
            if os.path.isfile(full):
                paths.append(os.path.normpath(full))
    if not paths:
        raise SourceError(
            f"The directory {directory!r} holds no payload files (*.ndjson, *.jsonl, *.json, optionally .gz)."
        )
    return sorted(paths)


def _stat(path: str) -> PayloadFile:
    try:
        info = os.stat(path)
        with open(path, "rb"):
            pass
    except OSError as error:
        raise SourceError(f"The file {path!r} cannot be read ({error.strerror}); fix its permissions.") from error
    return PayloadFile(path=path, size=info.st_size, mtime_ns=info.st_mtime_ns)


def read_chunks(
    file: PayloadFile, *, chunk_records: int = 65_536, max_record_bytes: int = 16 << 20, digest: Any = None
) -> Iterator[Chunk]:
    """Read one payload file as chunks of raw records.

    Parameters
    ----------
    file
        The file, from :func:`find_files`.
    chunk_records
        At most this many records per chunk.
    max_record_bytes
        A record (line, array element, or whole single-body file) larger than
        this is not handed on: an oversize marker stands in its place.
    digest
        A :mod:`hashlib` object, fed every byte of the file as stored
        (compressed, for gzip) as it is read: the file is read once, not once
        more to hash it.

    Yields
    ------
    Chunk
        Raw records with their positions.

    Raises
    ------
    PartialRead
        The file broke off part way (a truncated or corrupt gzip stream, an
        unclosed JSON array, a read error): raised after the records before
        the break were yielded.
    SourceError
        The file cannot be opened, or not a byte of it can be read.
    """
    with _open(file.path) as raw:
        counting = _Counting(raw, digest)
        source = io.BufferedReader(counting)
        try:
            is_gzip = source.peek(2)[:2] == _GZIP_MAGIC
        except OSError as error:
            raise _unreadable(file.path, error) from error
        stream = _Blocks(gzip.GzipFile(fileobj=source, mode="rb") if is_gzip else source)
        reader = _read_lines if _is_line_format(file.path) else _read_document
        line, unfinished = yield from reader(file.path, stream, chunk_records, max_record_bytes)
        failure = stream.error
        if failure is None and digest is not None:
            failure = _drain(source)  # whatever the reader left (a gzip trailer), so the hash is whole
        if failure is None and stream.cut_short is None:
            return
        if failure is None:
            reason = f"{stream.cut_short}; the records before this point were loaded"
            raise PartialRead(file.path, line, unfinished[:OVERSIZE_PREVIEW_BYTES], reason, hashed=digest is not None)
        if not counting.bytes_read:
            raise _unreadable(file.path, failure) from failure
        hashed = digest is not None and _drain(source) is None
        if is_gzip and isinstance(failure, (EOFError, zlib.error, gzip.BadGzipFile)):
            reason = f"corrupt or truncated gzip: {failure}; the records before this point were loaded"
        else:
            reason = f"read error: {failure}; the records before this point were loaded"
        raise PartialRead(file.path, line, unfinished[:OVERSIZE_PREVIEW_BYTES], reason, hashed=hashed) from failure


def _open(path: str) -> io.FileIO:
    try:
        return open(path, "rb", buffering=0)
    except OSError as error:
        raise _unreadable(path, error) from error


def _unreadable(path: str, error: BaseException) -> SourceError:
    return SourceError(
        f"{path}: cannot be read ({error}). Check that the file is readable, or leave it out of the sources."
    )


def _drain(source: BinaryIO) -> BaseException | None:
    """Read the rest of source, so a hash fed while reading sees every byte; what went wrong, if anything."""
    try:
        while source.read(_READ_SIZE):
            pass
    except _READ_FAILURES as error:
        return error
    return None


def _is_line_format(path: str) -> bool:
    base = path[:-3] if path.endswith(".gz") else path
    return base.endswith(_LINE_FORMAT_SUFFIXES)


class _Counting(io.RawIOBase):
    """A raw file that counts the bytes read from it and, given a hash, feeds them to it."""

    def __init__(self, raw: io.RawIOBase, digest: Any) -> None:
        self._raw = raw
        self._digest = digest
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        n = self._raw.readinto(buffer)
        if n:
            self.bytes_read += n
            if self._digest is not None:
                self._digest.update(memoryview(buffer)[:n])
        return n


class _Blocks:
    """A stream read in blocks; when it fails part way, the bytes before the failure still come out.

    A plain ``read`` of a gzip or buffered stream discards what it had
    decoded when a later part of the same call fails; ``read1`` never holds
    bytes back, so a block is put together from ``read1`` calls. The failure
    is kept in ``error`` and the stream then reads as ended. Bytes pushed
    back are read first.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._head = b""
        self.error: BaseException | None = None
        # Set by a reader when the bytes all came but the content stops short (an array never closed).
        self.cut_short: str | None = None

    def push_back(self, data: bytes) -> None:
        """Have data read again before the rest of the stream."""
        self._head = data + self._head

    def peek_end(self) -> bool:
        """Whether nothing is left to read."""
        more = self.read(1)
        self.push_back(more)
        return not more

    def read(self, size: int) -> bytes:
        if self._head:
            block, self._head = self._head[:size], self._head[size:]
            return block
        if self.error is not None:
            return b""
        pieces: list[bytes] = []
        got = 0
        while got < size:
            try:
                piece = self._stream.read1(min(size - got, _READ_SIZE))
            except _READ_FAILURES as error:
                self.error = error
                break
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _read_lines(path: str, stream: _Blocks, chunk_records: int, max_record_bytes: int) -> Generator[Chunk, None, _Stop]:
    """NDJSON: each read block's complete lines become Arrow arrays over the block's own bytes (no copy per line).

    Returns where reading stopped and the start of the unfinished line, for a stream that broke off.
    """
    line_number = 1
    carry = b""
    skipped: int | None = None  # bytes seen so far of an oversize line not kept
    preview = b""
    at_start = True
    is_line_feed = np.empty(0, dtype=bool)
    while True:
        block = stream.read(_READ_SIZE)
        if at_start:
            if block.startswith(_BOM):
                block = block[len(_BOM):]
            at_start = False
        if not block:
            break
        if skipped is not None:
            cut = block.find(b"\n")
            if cut < 0:
                skipped += len(block)
                continue
            yield Chunk.of(path, line_number, [_oversize_entry(skipped + cut, preview)])
            skipped = None
            block = block[cut + 1:]
            line_number += 1
        begin = 0
        if carry:
            # The line begun in the block before is put together on its own, so the rest of this
            # block is used as read (joining the two blocks would copy every byte once more).
            cut = block.find(b"\n")
            if cut < 0:
                carry += block
            else:
                joined = carry + block[:cut + 1]
                yield Chunk(path, line_number, *_block_lines(joined, np.array([len(joined) - 1]), max_record_bytes))
                line_number += 1
                carry = b""
                begin = cut + 1
        if not carry:
            codes = np.frombuffer(block, dtype=np.uint8, offset=begin)
            if len(is_line_feed) < len(codes):
                is_line_feed = np.empty(len(codes), dtype=bool)  # reused: a new one per block costs fresh pages
            ends = np.flatnonzero(np.equal(codes, 0x0A, out=is_line_feed[: len(codes)])) + begin
            if len(ends):
                lines, oversize = _block_lines(block, ends, max_record_bytes, begin=begin)
                for start in range(0, len(lines), chunk_records):
                    stop = min(start + chunk_records, len(lines))
                    inside = {i - start: marker for i, marker in oversize.items() if start <= i < stop}
                    yield Chunk(path, line_number + start, lines.slice(start, stop - start), inside)
                line_number += len(lines)
                carry = block[int(ends[-1]) + 1:]
            else:
                carry = block[begin:]
        if len(carry) > max_record_bytes:
            skipped, preview, carry = len(carry), carry[:OVERSIZE_PREVIEW_BYTES], b""
    if stream.error is not None:
        # The last line was cut short by the break: it becomes the rejected record of the break.
        return line_number, preview if skipped is not None else carry[:OVERSIZE_PREVIEW_BYTES]
    if skipped is not None:
        yield Chunk.of(path, line_number, [_oversize_entry(skipped, preview)])
    elif carry:
        yield Chunk.of(path, line_number, [carry])
    return line_number, b""


def _block_lines(
    data: bytes, ends: np.ndarray, max_record_bytes: int, *, begin: int = 0
) -> tuple[pa.BinaryArray, dict[int, Oversize]]:
    """The complete lines of data from ``begin`` on (ends: positions of their line feeds), each with its line feed."""
    # A block is at most one read plus one record (max_record_bytes is capped at 1 GiB): 32-bit offsets hold it.
    offsets = np.empty(len(ends) + 1, dtype=np.int32)
    offsets[0] = begin
    offsets[1:] = ends + 1
    lines = pa.Array.from_buffers(pa.binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    lengths = np.diff(offsets) - 1
    too_long = np.flatnonzero(lengths > max_record_bytes)
    if not len(too_long):
        return lines, {}
    oversize = {
        int(i): _oversize_entry(
            int(lengths[i]), data[offsets[i]:min(offsets[i] + OVERSIZE_PREVIEW_BYTES, offsets[i + 1])]
        )
        for i in too_long
    }
    keep = np.ones(len(ends), dtype=bool)
    keep[too_long] = False
    return pa.array(lines.to_pylist(), pa.binary(), mask=~keep), oversize


def _oversize_entry(size: int, preview: bytes) -> Oversize:
    return Oversize(preview[:OVERSIZE_PREVIEW_BYTES], size)


def _read_document(path: str, stream: _Blocks, chunk_records: int, max_record_bytes: int) -> Generator[Chunk, None, _Stop]:
    """A .json file: a JSON array, one stored POST body, or NDJSON saved under a .json name.

    Returns where reading stopped and the start of the unfinished record, for a stream that broke off.
    """
    content = stream.read(max_record_bytes + 1)
    if content.startswith(_BOM):
        content = content[len(_BOM):]
    start = content.lstrip()[:1]
    if start == b"[":
        # Arrays are read whole (up to 1 GiB); big captures belong in NDJSON.
        content += stream.read(_MAX_DOCUMENT_BYTES)
        if stream.error is None:
            elements = _array_elements(content)
            if elements is not None:
                yield from _element_chunks(path, elements, chunk_records, max_record_bytes)
                return len(elements) + 1, b""
        # Broken off, or written only in part (the file ends before the closing bracket): the
        # complete elements load; the rest is where reading stopped.
        stripped = content.strip()
        elements, closed_at, begin = _array_parts(stripped, _PARTIAL_ARRAY_TOKENS)
        if stream.error is None and closed_at is None and stream.peek_end():
            stream.cut_short = "JSON array cut short: the file ends before its closing bracket"
        if stream.error is not None or stream.cut_short is not None:
            yield from _element_chunks(path, elements, chunk_records, max_record_bytes)
            return len(elements) + 1, b"" if closed_at is not None else stripped[begin:].strip()[:OVERSIZE_PREVIEW_BYTES]
    if start == b"{" and (len(content) > max_record_bytes or stream.error is not None):
        cut = content.find(b"\n")
        # Several objects, one per line: NDJSON saved under a .json name (a first line that is a
        # whole object, and more after it), so when the stream broke off, the lines before still load.
        if 0 <= cut < len(content.rstrip()) and _is_json(content[:cut]):
            stream.push_back(content)
            return (yield from _read_lines(path, stream, chunk_records, max_record_bytes))
    if stream.error is not None:
        return 1, content.strip()[:OVERSIZE_PREVIEW_BYTES]
    if len(content) > max_record_bytes:
        size = len(content)
        while block := stream.read(_READ_SIZE):
            size += len(block)
        if stream.error is not None:
            return 1, content[:OVERSIZE_PREVIEW_BYTES]
        yield Chunk.of(path, 1, [_oversize_entry(size, content)])
        return 2, b""
    stripped = content.strip()
    if _is_json(stripped) or not (stripped.count(b"\n") and start == b"{"):
        yield Chunk.of(path, 1, [stripped])
        return 2, b""
    stream.push_back(content)
    return (yield from _read_lines(path, stream, chunk_records, max_record_bytes))


def _element_chunks(path: str, elements: Sequence[bytes], chunk_records: int, max_record_bytes: int) -> Iterator[Chunk]:
    """Chunks of array elements (positions from 1), an oversize marker in place of each element over max_record_bytes."""
    for first in range(0, len(elements), chunk_records):
        part = elements[first:first + chunk_records]
        if any(len(element) > max_record_bytes for element in part):
            part = [_oversize_entry(len(e), e) if len(e) > max_record_bytes else e for e in part]
        yield Chunk.of(path, 1 + first, part)


def _is_json(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


_ARRAY_TOKENS: Final[re.Pattern[bytes]] = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]')
_LONG_NUMBER: Final[re.Pattern[bytes]] = re.compile(rb"[0-9]{19,}")


def _array_elements(content: bytes) -> list[bytes] | None:
    """The elements of a JSON array, each as its own text; None when the text is not an array.

    The fast path re-encodes what the parser read. When the parser refuses
    the array (one hostile element), or numbers are too long to survive a
    round trip, the elements are cut out of the text as they are, so every
    good element still loads and a bad one is rejected on its own.
    """
    stripped = content.strip()
    if not _LONG_NUMBER.search(stripped):
        try:
            elements = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            elements = None
        if isinstance(elements, list):
            return [orjson.dumps(element) for element in elements]
    if not (stripped.startswith(b"[") and stripped.endswith(b"]")):
        return None
    parts, closed_at, _ = _array_parts(stripped, _ARRAY_TOKENS)
    return parts if closed_at == len(stripped) else None


def _array_parts(stripped: bytes, tokens: re.Pattern[bytes]) -> tuple[list[bytes], int | None, int]:
    """Elements cut out of the text of a JSON array as they are, up to its closing bracket.

    Returns the elements; the end of the closing bracket (None when the text
    stops first, or a string runs to its end); and where the element after
    the last one returned begins.
    """
    parts: list[bytes] = []
    depth = 0
    begin = 1
    for token in tokens.finditer(stripped):
        text = token.group()
        if text == b'"':
            break  # a string runs to the end of the text: nothing after it is structure
        char = text[:1]
        if char == b'"':
            continue
        if char in (b"[", b"{"):
            depth += 1
        elif char in (b"]", b"}"):
            depth -= 1
            if depth == 0:
                tail = stripped[begin:token.start()].strip()
                if tail or parts:
                    parts.append(tail)
                return parts, token.end(), begin
        elif char == b"," and depth == 1:
            parts.append(stripped[begin:token.start()].strip())
            begin = token.end()
    return parts, None, begin


# As _ARRAY_TOKENS, and a lone quote: the start of a string the break cut short.
_PARTIAL_ARRAY_TOKENS: Final[re.Pattern[bytes]] = re.compile(rb'"(?:[^"\\]|\\.)*"|"|[\[\]{},]', re.DOTALL)
