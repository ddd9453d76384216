"""Exact, fast extraction of record fields from the two big JSON shapes the metric reads.

Python's `json` builds a dict per record and a float object per number: for a nuScenes
`sample_annotation.json` or a results file with hundreds of thousands of boxes that is most of the
evaluation's time. `scan_records` instead runs one Numba pass over the raw bytes that checks the
whole document is JSON and pulls only the wanted fields of each record into arrays:

- `TABLE` layout: a top-level array of objects (every nuScenes table); each object is a record.
- `RESULTS` layout: `{"results": {key: [object, ...], ...}, ...}` (a detection results file); each
  object is a record, its group is the key it is listed under; the byte range of the top-level
  `"meta"` value is kept so that the caller can decode that small part with `json`.

Numbers are converted exactly as `float(json.loads(token))` would (correctly rounded): an integer
mantissa m of at most 18 digits times 10^k is one multiply or divide when m <= 2^53 and |k| <= 22
(Clinger's fast path; both operands are exact doubles); else, as 10^k = 5^k 2^k, an exact integer
long division m / 5^|k| (or product m 5^k) for |k| <= 26, rounded half to even, with 2^k applied
exactly to the exponent; anything else (more digits, larger exponents) is
marked and converted afterwards by Python's `float()` on the token's bytes.

The scanner never decides anything the caller cannot check: any document it does not fully
understand (invalid JSON, another layout, duplicate keys, escapes in a wanted string, non-ASCII
text, NaN/Infinity literals, nesting deeper than `MAX_DEPTH`) gives `None`, and the caller then uses
`json` and its own checks, which name the problem. So valid files are fast and invalid ones get the
same errors as before.

Big documents are scanned as pieces on a thread pool, cut between records (`start_table_scan`)
or between the groups of "results" (`start_results_scan`); a cut in the wrong place makes a piece
fail, and the one pass then decides. Each string field of a kept record is also copied (up to
`COPIED_STRING_BYTES`) while the scan reads it, so that its later joins need not go back to the
file's bytes.

A `RecordFilter` (TABLE layout) skips the records of samples outside a split: they take no row
and their numbers are not converted, but they are checked as strictly as kept ones (the document
must still be JSON the scanner fully understands), and their shape (the kinds, lengths and string
flags of the wanted fields) is kept in one summary that the column checks (`strings`, `floats`, ...)
include; the hash of each one's id lets the caller check that ids stay distinct.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import re
from concurrent.futures import Executor, ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np

TABLE = 0
RESULTS = 1

# Field kinds (`ScannedRecords.kind`).
ABSENT = -1
STRING = 0
NUMBER = 1
TRUE = 2
FALSE = 3
NULL = 4
ARRAY = 5
OBJECT = 6

# String flags.
HAS_ESCAPE = 1
NON_ASCII = 2
# Number flags (per field: any number of the field, scalar or element).
NOT_INTEGER_FORM = 1  # has a fraction or an exponent (json gives a float, not an int)
BIG_INTEGER = 2  # integer-form with more than 18 digits

MAX_DEPTH = 256

_POW10_FLOAT = np.array([10.0**e for e in range(23)])  # all exact doubles
_MAX_POW5 = 26  # 5^26 < 2^61
_POW5_INT = np.array([5**e for e in range(_MAX_POW5 + 1)], np.int64)
_POW5_BITS = np.array([(5**e).bit_length() for e in range(_MAX_POW5 + 1)], np.int64)
_TWO_53 = 1 << 53
_TWO_54 = 1 << 54
_MAX_DIGITS = 18  # 10**18 < 2**63: the mantissa always fits an int64
COPIED_STRING_BYTES = 32  # a nuScenes token's length


def _pow5_table(max_exponent: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(high, low, binary_exponent) for each q in [-max_exponent, max_exponent] (row q +
    max_exponent): a 128-bit integer T = high * 2^64 + low in [2^127, 2^128) and e with
    5^q in [T, T + 1) * 2^e, T rounded down (so 5^q = T * 2^e exactly for q in [0, 55])."""
    high, low, exponent = [], [], []
    for q in range(-max_exponent, max_exponent + 1):
        if q >= 0:
            power = 5**q
            e = power.bit_length() - 128
            t = power << -e if e < 0 else power >> e
        else:
            power = 5**-q
            k = 127 + power.bit_length()  # 2^k / 5^-q lies in (2^127, 2^128)
            t, e = (1 << k) // power, -k
        assert 1 << 127 <= t < 1 << 128
        high.append(t >> 64)
        low.append(t & ((1 << 64) - 1))
        exponent.append(e)
    return np.array(high, np.uint64), np.array(low, np.uint64), np.array(exponent, np.int64)


# Decimal exponents of the 128-bit path (`_product_to_float`): 10^18 * 10^250 and 10^-250 stay far
# from the ends of the double range, so every result there is a normal double.
_MAX_PRODUCT_SCALE = 250
_POW5_HIGH, _POW5_LOW, _POW5_EXPONENT = _pow5_table(_MAX_PRODUCT_SCALE)
_POW5_EXACT_MAX = 55  # 5^55 < 2^128: T is 5^q itself (shifted)

# Bytes that a string may hold as they are: printable ASCII except '"' and '\\'.
_PLAIN_STRING_BYTE = np.array([32 <= c < 128 and c not in (34, 92) for c in range(256)], np.bool_)

# The kernels called once per token or record are compiled without Numba's reference counting
# (`_nrt=False`: they allocate nothing): otherwise each call takes and drops a reference to every
# array it is passed, atomic operations on shared counters that cost more than the scanning itself
# (measured: 0.50 s -> 0.24 s CPU per 100 MB of skipped annotation records).

_OBJ = 0
_ARR = 1
_EXPECT_VALUE = 0
_EXPECT_VALUE_OR_CLOSE = 1
_EXPECT_KEY_OR_CLOSE = 2
_EXPECT_KEY = 3
_EXPECT_COMMA_OR_CLOSE = 4
_DONE = 5


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Keep only the records whose `key` field is one of `values`: `scan_records` skips the others.

    A record is skipped once its `key` field is read and found to be a plain string (no escape,
    ASCII) that is not in `values`; from there on its numbers are checked but not converted, and it
    takes no row: `ScannedRecords.skipped` keeps the shape of all skipped records together (so that
    the checks of `strings`, `floats`, ... still cover them) and the hash of each one's `id_key`
    field. A record whose `key` field is anything else, or missing, is kept. Both keys must be
    wanted string fields (0 slots)."""

    key: str
    values: Sequence[str]
    id_key: str | None = None


@dataclass(frozen=True, slots=True)
class SkippedRecords:
    """What a filtered scan keeps of the M records it skipped; K wanted keys.

    id_hash (M,) uint64: `_range_hash` of each one's id string (0 where that is not a string).
    Over all of them, per key: kinds (K,) uint16, bit `1 << (kind + 1)` set for each kind seen
    (`ABSENT` included); element_kinds (K,) uint8 (as `ScannedRecords.element_kinds`, or-ed);
    element_count_min, element_count_max (K,) int64; string_flags (K,) uint8 (or-ed).
    """

    id_hash: np.ndarray
    kinds: np.ndarray
    element_kinds: np.ndarray
    element_count_min: np.ndarray
    element_count_max: np.ndarray
    string_flags: np.ndarray

    def __len__(self) -> int:
        return int(self.id_hash.shape[0])

    def only(self, k: int, *kinds: int) -> bool:
        """Whether every skipped record has one of `kinds` at key `k`."""
        allowed = sum(1 << (kind + 1) for kind in kinds)
        return len(self) == 0 or not (int(self.kinds[k]) & ~allowed)

    def plain_strings(self, k: int) -> bool:
        return self.only(k, STRING) and not self.string_flags[k]

    def number_arrays(self, k: int, width: int) -> bool:
        return len(self) == 0 or (
            self.only(k, ARRAY)
            and self.element_kinds[k] == 1 << NUMBER
            and self.element_count_min[k] == width
            and self.element_count_max[k] == width
        )


@dataclass(frozen=True, slots=True)
class ScannedRecords:
    """The wanted fields of every record; R records, K wanted keys (in `keys` order).

    kind (R, K) int8: the value's kind (`ABSENT`, `STRING`, `NUMBER`, ... ; `ARRAY` for lists).
    values (R, S) float64: each key owns `slots[key]` consecutive columns (`slot_offsets`): a number
    field at its first column, an array's numeric elements in order (as many as fit).
    int_values (R, K) int64: an integer-form number field's exact value.
    number_flags (R, K) uint8: `NOT_INTEGER_FORM` / `BIG_INTEGER` seen in the field.
    element_count (R, K) int64: an array field's length. element_kinds (R, K) uint8: bit `1 << kind`
    set for each kind among its elements.
    string_start, string_end (R, K) int64: byte range (without quotes) of a string field, or of an
    array field's first string element. string_flags (R, K) uint8: `HAS_ESCAPE` / `NON_ASCII`.
    copy_column (K,) int64: each string key's column (the keys with no number slots, in order) in
    string_bytes (R, C, COPIED_STRING_BYTES) uint8: the first bytes of that string, zero-padded,
    copied during the scan (only meaningful where the string has at most that many bytes).
    record_group (R,) int64: the group (RESULTS layout) of each record, 0 for TABLE.
    group_key_start, group_key_end (G,) int64: byte range of each group's key (RESULTS layout).
    group_size (G,) int64: records per group. meta_range: (start, end) of the "meta" value or (-1, -1).
    skipped: the records a `RecordFilter` skipped (none without one), in no row of the arrays above;
    `strings`, `floats`, `scalars` and `all_kinds_in` check them too.
    """

    data: bytes
    keys: tuple[str, ...]
    slot_offsets: np.ndarray
    kind: np.ndarray
    values: np.ndarray
    int_values: np.ndarray
    number_flags: np.ndarray
    element_count: np.ndarray
    element_kinds: np.ndarray
    string_start: np.ndarray
    string_end: np.ndarray
    string_flags: np.ndarray
    copy_column: np.ndarray
    string_bytes: np.ndarray
    record_group: np.ndarray
    group_key_start: np.ndarray
    group_key_end: np.ndarray
    group_size: np.ndarray
    meta_range: tuple[int, int]
    skipped: SkippedRecords

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def column(self, key: str) -> int:
        return self.keys.index(key)

    def strings(self, key: str) -> np.ndarray | None:
        """(R, L) uint8 matrix of the key's string values, zero-padded (see `string_matrix`), or
        None unless every record has a plain (no escape, ASCII) string there."""
        k = self.column(key)
        if not (np.all(self.kind[:, k] == STRING) and not np.any(self.string_flags[:, k]) and self.skipped.plain_strings(k)):
            return None
        return self.strings_at(key, slice(None))

    def strings_at(self, key: str, rows: np.ndarray | slice) -> np.ndarray:
        """(len(rows), L) `string_matrix` of the string the scan recorded for `key` in each record
        of `rows` (a string field's value, an array field's first string element; the caller has
        checked there is one), from the copies made during the scan when they hold every byte."""
        k = self.column(key)
        start, end = self.string_start[rows, k], self.string_end[rows, k]
        longest = int((end - start).max()) if len(start) else 0
        c = self.copy_column[k]
        if c < 0 or longest > COPIED_STRING_BYTES:
            return string_matrix(self.data, start, end)
        return np.ascontiguousarray(self.string_bytes[rows, c, : max(longest, 1)])

    def floats(self, key: str, width: int) -> np.ndarray | None:
        """(R, width) float64 of an array-of-`width`-numbers field, or None unless every record has one."""
        k = self.column(key)
        if not (
            np.all(self.kind[:, k] == ARRAY)
            and np.all(self.element_count[:, k] == width)
            and np.all(self.element_kinds[:, k] == 1 << NUMBER)
            and width <= self.slot_offsets[k + 1] - self.slot_offsets[k]
            and self.skipped.number_arrays(k, width)
        ):
            return None
        return self.number_slots(key)[:, :width].copy()

    def scalars(self, key: str) -> np.ndarray | None:
        """(R,) float64 of a number field, or None unless every record has a number there."""
        k = self.column(key)
        if not (np.all(self.kind[:, k] == NUMBER) and self.skipped.only(k, NUMBER)):
            return None
        return self.number_slots(key)[:, 0].copy()

    def all_kinds_in(self, key: str, *kinds: int) -> bool:
        """Whether every record, skipped ones included, has one of `kinds` at `key`."""
        k = self.column(key)
        return bool(np.all(np.isin(self.kind[:, k], kinds))) and self.skipped.only(k, *kinds)

    def ids_distinct(self, key: str) -> bool:
        """Whether each skipped record's id (`RecordFilter.id_key` = `key`) hashes to a value of
        its own, among the other skipped ids and the kept records' `key` strings (see `strings`):
        then no skipped id equals another id (a hash collision only gives False). Whether the kept
        ones are distinct among themselves is `StringIndex.unique`'s to say."""
        if len(self.skipped) == 0:
            return True
        k = self.column(key)
        skipped = np.sort(self.skipped.id_hash)
        if np.any(skipped[1:] == skipped[:-1]):
            return False
        kept = self._string_hashes(k)
        kept.sort()  # sorted queries: the binary searches walk forward through `skipped`
        position = np.minimum(np.searchsorted(skipped, kept), len(skipped) - 1)
        return not np.any(skipped[position] == kept)

    def _string_hashes(self, k: int) -> np.ndarray:
        """(R,) `_range_hash` of key `k`'s strings, from the scan's copies when they hold every byte."""
        start, end = self.string_start[:, k], self.string_end[:, k]
        lengths = end - start
        c = self.copy_column[k]
        if c >= 0 and (len(lengths) == 0 or lengths.max() <= COPIED_STRING_BYTES):
            return _copied_hashes(self.string_bytes, c, lengths)
        return _range_hashes(np.frombuffer(self.data, np.uint8), start, end)

    def integers(self, key: str, rows: np.ndarray | slice = slice(None)) -> np.ndarray | None:
        """(R,) int64 of an integer field (json ints), or None unless every record in `rows` has one."""
        k = self.column(key)
        if not (np.all(self.kind[rows, k] == NUMBER) and not np.any(self.number_flags[rows, k])):
            return None
        return self.int_values[rows, k].copy()

    def number_slots(self, key: str) -> np.ndarray:
        """(R, slots) view of the number columns of `key`."""
        k = self.column(key)
        return self.values[:, self.slot_offsets[k] : self.slot_offsets[k + 1]]

    def group_keys(self) -> np.ndarray:
        """(G, L) uint8 matrix of the group keys (RESULTS layout)."""
        return string_matrix(self.data, self.group_key_start, self.group_key_end)


def read_file_mapped(path: str | os.PathLike[str]) -> bytes | mmap.mmap:
    """The bytes of the file at `path`, read-only: a memory map of the page cache for big files
    (no copy of hundreds of MB into the heap; the pages are mapped up front), plain bytes for small
    or empty ones. Both slice to bytes and expose the buffer protocol. Raises OSError."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size < _MAP_MIN_BYTES:
            return file.read()
        flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)
        return mmap.mmap(file.fileno(), 0, flags=flags, prot=mmap.PROT_READ)


_MAP_MIN_BYTES = 1 << 20


def scan_records(
    data: bytes, layout: int, fields: Mapping[str, int], keep: RecordFilter | None = None
) -> ScannedRecords | None:
    """Scan `data` (the raw bytes of a JSON document in `layout`) for the wanted fields of each
    record, `fields` = {key: number slots} (1 for a number, w for an array of w numbers, 0 for
    strings and the rest); None when the document is not plainly in that layout (module docstring).
    With `keep` (TABLE layout only), the records it rejects are skipped (`RecordFilter`); the whole
    document is still checked as before."""
    return _scan_part(data, 0, len(data), False, False, layout, fields, keep)


def _scan_part(
    data: bytes,
    begin: int,
    end: int,
    open_implied: bool,
    close_implied: bool,
    layout: int,
    fields: Mapping[str, int],
    keep: RecordFilter | None,
) -> ScannedRecords | None:
    """`scan_records` of data[begin:end], with an implied "[" before it and "]" after it as asked
    (see `_scan`); byte positions are those of `data`."""
    keys = tuple(fields)
    filter_key, id_key, wanted = -1, -1, _NO_WANTED
    if keep is not None:
        if layout != TABLE or fields.get(keep.key) != 0 or (keep.id_key is not None and fields.get(keep.id_key) != 0):
            raise ValueError(f"a record filter needs the TABLE layout and wanted string fields, got {keep} for {dict(fields)}")
        filter_key = keys.index(keep.key)
        id_key = keys.index(keep.id_key) if keep.id_key is not None else -1
        wanted = _wanted(keep.values)
    slot_offsets = np.cumsum([0] + [int(fields[k]) for k in keys]).astype(np.int64)
    buffer = np.frombuffer(data, np.uint8)
    key_bytes = [key.encode("ascii") for key in keys]
    key_offsets = np.cumsum([0] + [len(k) for k in key_bytes]).astype(np.int64)
    key_buffer = np.frombuffer(b"".join(key_bytes) or b"\0", np.uint8)
    # Room for the records (and groups) as estimated from the piece's first bytes; a scan that
    # runs out of room starts again with room for every "{" (and "[") of the piece.
    cap_records = _estimated_count(buffer, begin, end, ord("{"))
    cap_groups = _estimated_count(buffer, begin, end, ord("[")) if layout == RESULTS else 1
    # Each string field (no number slots) of a kept record is also copied while the scan reads it
    # (`ScannedRecords.string_bytes`): gathering them later from a file of hundreds of MB would
    # cost a cache miss a record, once for each field.
    copy_column = np.full(len(keys), -1, np.int64)
    string_keys = [k for k, key in enumerate(keys) if int(fields[key]) == 0]
    copy_column[string_keys] = np.arange(len(string_keys))
    slow_cap = 1024
    while True:
        out = _scan(
            buffer, begin, end, open_implied, close_implied, layout, key_buffer, key_offsets, slot_offsets,
            cap_records, cap_groups, slow_cap, filter_key, id_key, *wanted, copy_column, len(string_keys),
        )  # fmt: skip
        status, n_records, n_groups, meta_start, meta_end, non_ascii, n_slow = out[0]
        if status == _OUT_OF_ROOM:
            cap_records = _count_byte(buffer[begin:end], ord("{")) + 1
            cap_groups = _count_byte(buffer[begin:end], ord("[")) + 1 if layout == RESULTS else 1
            continue
        if status != 0:
            return None
        if n_slow <= slow_cap:
            break
        slow_cap = n_slow  # more numbers to convert in Python than there was room for: again, with room
    (kind, values, int_values, number_flags, element_count, element_kinds, string_start, string_end,
     string_flags, record_group, group_key_start, group_key_end, group_size,
     slow_start, slow_end, slow_dest) = out[1:17]  # fmt: skip
    skipped = SkippedRecords(*out[17:23])
    # The copies' words are little-endian: their bytes in string order on any host.
    string_bytes = out[23].astype("<u8", copy=False).view(np.uint8)
    if non_ascii:
        try:
            str(data, "utf-8")  # json.loads(bytes) would reject invalid UTF-8
        except UnicodeDecodeError:
            return None
    # Tokens the scanner could not convert exactly: Python's float() on their bytes.
    flat = values.reshape(-1)
    for start, end, dest in zip(slow_start.tolist(), slow_end.tolist(), slow_dest.tolist()):
        flat[dest] = float(data[start:end])
    return ScannedRecords(
        data=data,
        keys=keys,
        slot_offsets=slot_offsets,
        kind=kind[:n_records],
        values=values[:n_records],
        int_values=int_values[:n_records],
        number_flags=number_flags[:n_records],
        element_count=element_count[:n_records],
        element_kinds=element_kinds[:n_records],
        string_start=string_start[:n_records],
        string_end=string_end[:n_records],
        string_flags=string_flags[:n_records],
        copy_column=copy_column,
        string_bytes=string_bytes[:n_records],
        record_group=record_group[:n_records],
        group_key_start=group_key_start[:n_groups],
        group_key_end=group_key_end[:n_groups],
        group_size=group_size[:n_groups],
        meta_range=(int(meta_start), int(meta_end)),
        skipped=skipped,
    )


_OUT_OF_ROOM = 3  # `_scan` status: more records or groups than `cap_records` / `cap_groups`
_ESTIMATE_BYTES = 1 << 16


def _estimated_count(buffer: np.ndarray, begin: int, end: int, byte: int) -> int:
    """Room for the `byte`s of buffer[begin:end]: their count in the first `_ESTIMATE_BYTES`
    scaled to the whole with a quarter to spare (exact when that is all of it). Counting all of
    a piece of tens of MB would take a pass over it of its own."""
    size = end - begin
    head = _count_byte(buffer[begin : begin + min(size, _ESTIMATE_BYTES)], byte)
    if size <= _ESTIMATE_BYTES:
        return head + 1
    return int(head * size / _ESTIMATE_BYTES * 1.25) + 1024


def _wanted(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(slots, hashes, matrix, lengths): the `_wanted_table` of `values` for `_scan`."""
    encoded = [value.encode("utf-8") for value in values]
    lengths = np.array([len(b) for b in encoded], np.int64)
    matrix = encode_strings(values)
    slots, hashes = _wanted_table(matrix, lengths)
    return slots, hashes, matrix, lengths


_NO_WANTED = (np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros((0, 1), np.uint8), np.zeros(0, np.int64))


def scan_workers() -> int:
    """Threads worth giving to the scans: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def table_parts(data: bytes, parts: int, min_part_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges [begin, end) of up to `parts` consecutive pieces of a TABLE document, each at
    least about `min_part_bytes` long, cut near equal shares: a piece ends just after a record's
    `}` that a `,` and the next record's `{` follow (only whitespace between), and the next one
    begins at that `{`. One range, the whole document, when it is too small or no cut is found."""
    size = len(data)
    count = max(1, min(parts, size // max(1, min_part_bytes)))
    ranges = []
    begin = 0
    for j in range(1, count):
        match = _RECORD_BOUNDARY.search(data, max(size * j // count, begin))
        if match is None:
            break
        ranges.append((begin, match.start() + 1))
        begin = match.end() - 1
    ranges.append((begin, size))
    return ranges


class PendingScan:
    """A scan running as pieces on a thread pool (`start_table_scan`, `start_results_scan`);
    `result()` waits and gives what `scan_records(data, layout, fields, keep)` would."""

    def __init__(
        self,
        data: bytes,
        layout: int,
        fields: Mapping[str, int],
        keep: RecordFilter | None,
        ranges: list[tuple[int, int]],
        pool: Executor,
    ) -> None:
        self._data, self._layout, self._fields, self._keep = data, layout, fields, keep
        last = len(ranges) - 1
        self._futures = [
            pool.submit(_scan_part, data, begin, end, j > 0, j < last, layout, fields, keep)
            for j, (begin, end) in enumerate(ranges)
        ]

    def cancel(self) -> None:
        """Cancel the pieces not yet started (the caller gives up on the result)."""
        for future in self._futures:
            future.cancel()

    def result(self) -> ScannedRecords | None:
        parts = [future.result() for future in self._futures]
        if len(parts) == 1:
            return parts[0]
        one_pass = lambda: scan_records(self._data, self._layout, self._fields, self._keep)  # noqa: E731
        if any(part is None for part in parts):
            return one_pass()  # one pass decides
        if self._layout == TABLE:
            return one_pass() if any(len(part.group_size) for part in parts) else _merged(self._data, parts, TABLE)
        # RESULTS: "meta" once in the whole document (a second one is json's to decide).
        if sum(part.meta_range[0] >= 0 for part in parts) > 1:
            return one_pass()
        return _merged(self._data, parts, RESULTS)


def start_table_scan(
    data: bytes,
    fields: Mapping[str, int],
    keep: RecordFilter | None,
    pool: Executor,
    parts: int,
    min_part_bytes: int = 8 << 20,
) -> PendingScan:
    """Start `scan_records(data, TABLE, fields, keep)` on `pool` as up to `parts` pieces scanned at
    once (the scanner releases the GIL), each cut at a record boundary (`table_parts`) and merged in
    document order.

    Were a cut inside a string or a nested value, the piece before it (read as if closed with `]`)
    would not end after a complete record of the top-level array, and so would not be a table: the
    pieces are checked in order, each from the state the previous one ended in (inside the array,
    after a record, then the `,` between them), so a piece that does not fit makes the whole
    document scanned again in one pass, which then decides. The pieces never change the result.
    They are read in place (no copy of the file). A task on `pool` must not wait for this scan
    (the pool's workers could all be waiting then)."""
    return PendingScan(data, TABLE, fields, keep, table_parts(data, parts, min_part_bytes), pool)


def scan_table_in_parts(
    data: bytes,
    fields: Mapping[str, int],
    keep: RecordFilter | None = None,
    parts: int | None = None,
    min_part_bytes: int = 8 << 20,
) -> ScannedRecords | None:
    """`start_table_scan` on a pool of its own (`scan_workers()` threads, and as many pieces unless
    `parts` says otherwise), waited for."""
    workers = scan_workers()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return start_table_scan(data, fields, keep, pool, parts or workers, min_part_bytes).result()


def results_parts(data: bytes, parts: int, min_part_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges [begin, end) of up to `parts` consecutive pieces of a RESULTS document, each at
    least about `min_part_bytes` long, cut near equal shares: a piece ends just after a group's
    `]` that follows a record's `}` and that a `,` and the next key's quote follow (only
    whitespace between), and the next one begins at that quote. One range, the whole document,
    when it is too small or no cut is found. (A cut that is not between two groups of "results",
    say inside a string, makes the piece before it fail `_scan`'s closing check.)"""
    size = len(data)
    count = max(1, min(parts, size // max(1, min_part_bytes)))
    ranges = []
    begin = 0
    for j in range(1, count):
        match = _GROUP_BOUNDARY.search(data, max(size * j // count, begin))
        if match is None:
            break
        ranges.append((begin, match.end(1)))
        begin = match.start(2)
    ranges.append((begin, size))
    return ranges


def start_results_scan(
    data: bytes, fields: Mapping[str, int], pool: Executor, parts: int, min_part_bytes: int = 8 << 20
) -> PendingScan:
    """Start `scan_records(data, RESULTS, fields)` on `pool` as up to `parts` pieces scanned at
    once, cut between groups (`results_parts`) and merged in document order (groups numbered
    across the pieces, "meta" from the piece that holds it).

    Each piece but the first starts as inside the results object, before a key; each but the last
    must end just after one of its groups (`_scan`), and the pieces are scanned from the state the
    previous one ended in, so a cut anywhere else makes a piece fail and the whole document is
    scanned again in one pass, which then decides. The pieces never change the result. A task on
    `pool` must not wait for this scan."""
    return PendingScan(data, RESULTS, fields, None, results_parts(data, parts, min_part_bytes), pool)


# The (R, ...) per-record arrays of `ScannedRecords`: pieces concatenate them in order.
_RECORD_COLUMNS: tuple[str, ...] = (
    "kind", "values", "int_values", "number_flags", "element_count", "element_kinds",
    "string_start", "string_end", "string_flags", "string_bytes",
)  # fmt: skip


def _merged(data: bytes, parts: list[ScannedRecords], layout: int) -> ScannedRecords:
    """The scans of consecutive pieces of one document as one (the pieces' order).

    Records concatenate alike in both layouts. A RESULTS document's groups concatenate too (each
    piece's group numbers shifted past the groups before it) and its "meta" comes from the one
    piece that has it; a TABLE document has no groups, and its skipped-record summaries combine.
    """

    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts])

    first = parts[0]
    columns = {name: joined(name) for name in _RECORD_COLUMNS}
    if layout == RESULTS:
        group_offsets = np.cumsum([0] + [len(part.group_size) for part in parts[:-1]])
        with_meta = [part.meta_range for part in parts if part.meta_range[0] >= 0]
        return dataclasses.replace(
            first, data=data, **columns,
            record_group=np.concatenate([part.record_group + offset for part, offset in zip(parts, group_offsets)]),
            group_key_start=joined("group_key_start"), group_key_end=joined("group_key_end"),
            group_size=joined("group_size"), meta_range=with_meta[0] if with_meta else (-1, -1),
        )  # fmt: skip

    def skipped(name: str) -> np.ndarray:
        return np.stack([getattr(part.skipped, name) for part in parts])

    return dataclasses.replace(
        first, data=data, **columns, record_group=joined("record_group"), meta_range=(-1, -1),
        skipped=SkippedRecords(
            id_hash=np.concatenate([part.skipped.id_hash for part in parts]),
            kinds=np.bitwise_or.reduce(skipped("kinds"), axis=0),
            element_kinds=np.bitwise_or.reduce(skipped("element_kinds"), axis=0),
            element_count_min=skipped("element_count_min").min(axis=0),
            element_count_max=skipped("element_count_max").max(axis=0),
            string_flags=np.bitwise_or.reduce(skipped("string_flags"), axis=0),
        ),
    )  # fmt: skip


_RECORD_BOUNDARY = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")
_GROUP_BOUNDARY = re.compile(rb'\}[ \t\r\n]*(\])[ \t\r\n]*,[ \t\r\n]*(")')


def string_matrix(data: bytes, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(N, L) uint8: the bytes data[start[i]:end[i]] of each row, zero-padded to the longest
    (L >= 1). Strings without NUL bytes compare equal exactly when their rows do."""
    lengths = (end - start).astype(np.int64)
    width = max(int(lengths.max()) if len(lengths) else 0, 1)
    return _gather(np.frombuffer(data, np.uint8), start.astype(np.int64), lengths, width)


def decode_strings(matrix: np.ndarray) -> list[str]:
    """The rows of a `string_matrix` as Python strings."""
    return [row.decode("ascii") for row in matrix.view(f"S{matrix.shape[1]}").ravel().tolist()]


def encode_strings(strings: Sequence[str], width: int | None = None) -> np.ndarray:
    """Python strings -> a `string_matrix`-style (N, L) uint8 matrix (UTF-8, zero-padded)."""
    encoded = [s.encode("utf-8") for s in strings]
    longest = max([len(b) for b in encoded], default=0)
    width = max(longest, 1) if width is None else width
    matrix = np.zeros((len(encoded), width), np.uint8)
    if encoded and longest:
        flat = np.frombuffer(np.array(encoded, f"S{width}").tobytes(), np.uint8)
        matrix[:] = flat.reshape(len(encoded), width)
    return matrix


class StringIndex:
    """Exact lookup of string rows (`string_matrix` rows) among unique keys.

    The rows, as words of 8 bytes, go into an open-addressing hash table (one Numba pass); a
    look-up probes it and compares every word of a hit, so a hash collision never gives a wrong
    answer. `unique` is False when two keys are equal: callers needing the devkit's last-wins dict
    semantics then fall back (look-ups find the first of equal keys).
    """

    def __init__(self, keys: np.ndarray) -> None:
        self.width = keys.shape[1]
        self._words = np.ascontiguousarray(_words(keys, self.width))
        self._slots, self._slot_hashes, duplicate = _row_table(self._words)
        self.unique = not duplicate

    def lookup(self, queries: np.ndarray) -> np.ndarray:
        """(Q,) int64 row of each query among the keys, -1 where absent."""
        if queries.shape[1] > self.width:
            longer = np.any(queries[:, self.width :] != 0, axis=1)
            queries = queries[:, : self.width]
        else:
            longer = np.zeros(len(queries), bool)
        words = np.ascontiguousarray(_words(queries, self.width))
        return _row_lookup(self._words, self._slots, self._slot_hashes, words, longer)


def _words(matrix: np.ndarray, width: int) -> np.ndarray:
    """(N, L) uint8 padded to `width` bytes and a multiple of 8 -> (N, ceil(width / 8)) uint64."""
    padded_width = -(-width // 8) * 8
    if matrix.shape[1] == padded_width and matrix.flags.c_contiguous:
        return matrix.view(np.uint64)  # already whole words (e.g. 32-byte tokens): no copy
    padded = np.zeros((matrix.shape[0], padded_width), np.uint8)
    columns = min(matrix.shape[1], width)
    padded[:, :columns] = matrix[:, :columns]
    return padded.view(np.uint64)


# ----------------------------------------------------------------------------------------------
# Kernels


@numba.njit(cache=True, nogil=True)
def _count_byte(buffer, value):  # pragma: no cover - compiled
    count = 0
    for i in range(buffer.shape[0]):
        count += buffer[i] == value
    return count


@numba.njit(cache=True, nogil=True)
def _gather(buffer, start, lengths, width):  # pragma: no cover - compiled
    out = np.zeros((start.shape[0], width), np.uint8)
    for i in range(start.shape[0]):
        s = start[i]
        for j in range(lengths[i]):
            out[i, j] = buffer[s + j]
    return out


# The byte loops below index with unsigned integers: Numba then needs no negative-index wrap-around
# per access, and LLVM merges the 8 byte loads of `_word` into one (measured on the tokenizing
# core of the scanner over a 385 MB table: about 1.5x faster).
_U1 = np.uint64(1)


@numba.njit(cache=True, nogil=True, _nrt=False)
def _skip_ws(buffer, i, n):  # pragma: no cover - compiled
    u, end = np.uint64(i), np.uint64(n)
    while u < end:
        c = buffer[u]
        if c != 32 and c != 10 and c != 13 and c != 9:
            break
        u += _U1
    return np.int64(u)


@numba.njit(cache=True, nogil=True, _nrt=False)
def _word(buffer, u):  # pragma: no cover - compiled
    """The 8 bytes at buffer[u:u + 8] as a little-endian uint64 (the caller checks they exist)."""
    w = np.uint64(0)
    for j in range(8):
        w |= np.uint64(buffer[u + np.uint64(j)]) << np.uint64(8 * j)
    return w


@numba.njit(cache=True, nogil=True, _nrt=False)
def _plain_word(w):  # pragma: no cover - compiled
    """Whether all 8 bytes of `w` are `_PLAIN_STRING_BYTE`s: none is a quote, a backslash, below 32
    or above 127. (A subtraction's borrow only crosses a byte that is itself one of those, so
    each byte is judged exactly.)"""
    ones = np.uint64(0x0101010101010101)
    quote = w ^ np.uint64(0x2222222222222222)
    backslash = w ^ np.uint64(0x5C5C5C5C5C5C5C5C)
    special = ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash) | (w - np.uint64(0x2020202020202020)) | w
    return (special & np.uint64(0x8080808080808080)) == 0


@numba.njit(cache=True, nogil=True, _nrt=False)
def _eight_digits(w):  # pragma: no cover - compiled
    """Whether all 8 bytes of `w` are ASCII digits (exact: each byte's high nibble is 3 and adding 6
    to its low nibble does not carry)."""
    high = np.uint64(0xF0F0F0F0F0F0F0F0)
    return ((w & high) | (((w + np.uint64(0x0606060606060606)) & high) >> np.uint64(4))) == np.uint64(0x3333333333333333)


@numba.njit(cache=True, nogil=True, _nrt=False)
def _eight_digits_value(w):  # pragma: no cover - compiled
    """The value of 8 ASCII digits, the first one in the low byte of `w` (`_eight_digits(w)`):
    pairs, then quadruples, then the whole, each step a multiply of lanes that cannot overflow."""
    w -= np.uint64(0x3030303030303030)
    w = w * np.uint64(10) + (w >> np.uint64(8))  # each 16-bit lane's low byte: 10 * d0 + d1
    lanes = np.uint64(0x000000FF000000FF)
    w = ((w & lanes) * np.uint64(0x000F424000000064) + ((w >> np.uint64(16)) & lanes) * np.uint64(0x0000271000000001)) >> np.uint64(32)
    return np.int64(w)


@numba.njit(cache=True, nogil=True, _nrt=False)
def _digits_end(buffer, u, end):  # pragma: no cover - compiled
    """The end of the run of ASCII digits at `u` (unsigned indices)."""
    while u + np.uint64(8) <= end and _eight_digits(_word(buffer, u)):
        u += np.uint64(8)
    while u < end and 48 <= buffer[u] <= 57:
        u += _U1
    return u


@numba.njit(cache=True, nogil=True, _nrt=False)
def _scan_string(buffer, i, n):  # pragma: no cover - compiled
    """`buffer[i]` is the opening quote. Returns (index after the closing quote or -1, flags)."""
    flags = 0
    u, end = np.uint64(i + 1), np.uint64(n)
    while u + np.uint64(8) <= end and _plain_word(_word(buffer, u)):  # the common case: 8 plain bytes
        u += np.uint64(8)
    while u < end and _PLAIN_STRING_BYTE[buffer[u]]:
        u += _U1
    i = np.int64(u)
    while i < n:
        c = buffer[i]
        if _PLAIN_STRING_BYTE[c]:
            i += 1
            continue
        if c == 34:  # '"'
            return i + 1, flags
        if c == 92:  # '\\'
            flags |= HAS_ESCAPE
            if i + 1 >= n:
                return -1, flags
            e = buffer[i + 1]
            if e == 117:  # 'u' + 4 hex digits
                if i + 5 >= n:
                    return -1, flags
                for j in range(i + 2, i + 6):
                    h = buffer[j]
                    if not ((48 <= h <= 57) or (65 <= h <= 70) or (97 <= h <= 102)):
                        return -1, flags
                i += 6
                continue
            if e == 34 or e == 92 or e == 47 or e == 98 or e == 102 or e == 110 or e == 114 or e == 116:
                i += 2
                continue
            return -1, flags
        if c < 32:  # control characters must be escaped (json's strict mode)
            return -1, flags
        if c >= 128:
            flags |= NON_ASCII
        i += 1
    return -1, flags


@numba.njit(cache=True, nogil=True, _nrt=False)
def _ratio_to_float(numerator, denominator, denominator_bits):  # pragma: no cover - compiled
    """numerator / denominator correctly rounded (half to even); 0 < numerator < 2^63,
    0 < denominator < 2^61 with bit length `denominator_bits`: a binary long division to at least
    54 significant bits (several bits per step), then round to 53 with a sticky bit."""
    q = numerator // denominator
    r = numerator % denominator
    exponent = 0
    # Keep q << step < 2^63 (q < 2^53 here) and r << step < 2^63 (r < denominator).
    step = min(9, 62 - denominator_bits)
    while q < _TWO_53:
        r <<= step
        q = (q << step) | (r // denominator)
        r = r % denominator
        exponent -= step
    sticky = r != 0
    if q >= _TWO_54:
        bits = 0
        t = q
        while t >= _TWO_54:
            t >>= 1
            bits += 1
        sticky = sticky or (q & ((1 << bits) - 1)) != 0
        q = t
        exponent += bits
    mantissa = q >> 1
    exponent += 1
    if (q & 1) and (sticky or (mantissa & 1)):
        mantissa += 1
    return math.ldexp(np.float64(mantissa), exponent)


_LOW_32 = np.uint64(0xFFFFFFFF)
_ZERO = np.uint64(0)


@numba.njit(cache=True, nogil=True, _nrt=False)
def _multiply_64(a, b):  # pragma: no cover - compiled
    """The 128-bit product of uint64 a and b as (high, low) uint64 words."""
    a_low, a_high = a & _LOW_32, a >> np.uint64(32)
    b_low, b_high = b & _LOW_32, b >> np.uint64(32)
    low_low = a_low * b_low
    low_high = a_low * b_high
    high_low = a_high * b_low
    middle = (low_low >> np.uint64(32)) + (low_high & _LOW_32) + (high_low & _LOW_32)  # < 3 * 2^32
    low = (low_low & _LOW_32) | (middle << np.uint64(32))
    high = a_high * b_high + (low_high >> np.uint64(32)) + (high_low >> np.uint64(32)) + (middle >> np.uint64(32))
    return high, low


@numba.njit(cache=True, nogil=True, _nrt=False)
def _bit_length(value):  # pragma: no cover - compiled
    """Bits of the int64 value > 0."""
    bits = 1
    for width in (32, 16, 8, 4, 2, 1):
        if value >> width:
            value >>= width
            bits += width
    return bits


@numba.njit(cache=True, nogil=True, _nrt=False)
def _product_to_float(mantissa, scale):  # pragma: no cover - compiled
    """(mantissa * 10^scale correctly rounded, True), or (0.0, False) where this cannot decide;
    0 < mantissa < 2^63, |scale| <= _MAX_PRODUCT_SCALE.

    With 10^q = 5^q 2^q and 5^q in [T, T + 1) 2^e (`_pow5_table`), the mantissa shifted to 64
    bits, w, gives w 5^q / 2^e in [w T, w T + w): the upper 128 bits U of the 192-bit w T hold
    x = (that value) / 2^64 within [U, U + 2). The top 53 bits of U are the result, rounded up
    when the bits below are more than half of their range, down when even U + 2 stays below half;
    in between (a tie, or too close to tell) this gives up, unless 5^q is exact (q <= 55) and the
    lowest word of w T decides the tie. Two roundings never happen: only U's own bits are used."""
    row = scale + _MAX_PRODUCT_SCALE
    shift = 64 - _bit_length(mantissa)
    w = np.uint64(mantissa) << np.uint64(shift)
    high_high, high_low = _multiply_64(w, _POW5_HIGH[row])
    low_high, low_low = _multiply_64(w, _POW5_LOW[row])
    u_low = high_low + low_high
    carry = np.uint64(1) if u_low < low_high else np.uint64(0)
    u_high = high_high + carry  # w T < 2^192: no overflow
    if u_high >> np.uint64(63):
        dropped = 75  # U has 128 bits: 53 kept, 75 below
    else:
        dropped = 74
    result = np.int64(u_high >> np.uint64(dropped - 64))
    rest_high = u_high & ((np.uint64(1) << np.uint64(dropped - 64)) - np.uint64(1))
    half_high = np.uint64(1) << np.uint64(dropped - 65)  # half = half_high * 2^64
    if 0 <= scale <= _POW5_EXACT_MAX:
        # x = U + low_low / 2^64 exactly.
        above = rest_high > half_high or (rest_high == half_high and (u_low > _ZERO or low_low > _ZERO))
        tie = rest_high == half_high and u_low == _ZERO and low_low == _ZERO
        round_up = above or (tie and (result & 1) == 1)
    elif rest_high > half_high or (rest_high == half_high and u_low > _ZERO):
        round_up = True  # x >= U > half
    elif rest_high < half_high - np.uint64(1) or (rest_high == half_high - np.uint64(1) and u_low < np.uint64(0xFFFFFFFFFFFFFFFF)):
        round_up = False  # x < U + 2 <= half
    else:
        return 0.0, False
    if round_up:
        result += 1
    return math.ldexp(np.float64(result), dropped + 64 + _POW5_EXPONENT[row] + scale - shift), True


@numba.njit(cache=True, nogil=True, _nrt=False)
def _scan_number(buffer, i, n):  # pragma: no cover - compiled
    """JSON number at `i`. Returns (end or -1, value, exact, is_integer_form, int_value, big_integer)."""
    u, end = np.uint64(i), np.uint64(n)
    negative = False
    if buffer[u] == 45:  # '-'
        negative = True
        u += _U1
    if u >= end or not (48 <= buffer[u] <= 57):
        return -1, 0.0, False, False, 0, False
    mantissa = 0
    digits = 0
    scale = 0
    dropped = False
    # Runs of 8 digits are read at once (`_eight_digits_value`) while they fit the mantissa, until
    # a word that is not all digits; the rest digit by digit.
    words = True
    if buffer[u] == 48:  # a leading 0 stands alone
        u += _U1
    else:
        while u < end and 48 <= buffer[u] <= 57:
            if words and digits + 8 <= _MAX_DIGITS and u + np.uint64(8) <= end:
                w = _word(buffer, u)
                if _eight_digits(w):
                    mantissa = mantissa * 100000000 + _eight_digits_value(w)
                    digits += 8
                    u += np.uint64(8)
                    continue
                words = False
            d = buffer[u] - 48
            if digits < _MAX_DIGITS:
                mantissa = mantissa * 10 + d
                digits += 1
            else:
                scale += 1
                dropped = True
            u += _U1
    integer_form = True
    if u < end and buffer[u] == 46:  # '.'
        integer_form = False
        u += _U1
        if u >= end or not (48 <= buffer[u] <= 57):
            return -1, 0.0, False, False, 0, False
        words = True
        while u < end and 48 <= buffer[u] <= 57:
            # Not among leading zeros (mantissa 0), which only move the scale.
            if words and mantissa != 0 and digits + 8 <= _MAX_DIGITS and u + np.uint64(8) <= end:
                w = _word(buffer, u)
                if _eight_digits(w):
                    mantissa = mantissa * 100000000 + _eight_digits_value(w)
                    digits += 8
                    scale -= 8
                    u += np.uint64(8)
                    continue
                words = False
            d = buffer[u] - 48
            if mantissa == 0 and d == 0:
                scale -= 1
            elif digits < _MAX_DIGITS:
                mantissa = mantissa * 10 + d
                digits += 1
                scale -= 1
            else:
                dropped = True
            u += _U1
    if u < end and (buffer[u] == 101 or buffer[u] == 69):  # 'e' / 'E'
        integer_form = False
        u += _U1
        exponent_negative = False
        if u < end and (buffer[u] == 43 or buffer[u] == 45):
            exponent_negative = buffer[u] == 45
            u += _U1
        if u >= end or not (48 <= buffer[u] <= 57):
            return -1, 0.0, False, False, 0, False
        exponent = 0
        while u < end and 48 <= buffer[u] <= 57:
            if exponent < 100000:
                exponent = exponent * 10 + (buffer[u] - 48)
            u += _U1
        scale += -exponent if exponent_negative else exponent
    i = np.int64(u)
    int_value = -mantissa if negative else mantissa
    if dropped:
        return i, 0.0, False, integer_form, int_value, integer_form
    if mantissa == 0:  # json reads "-0" as the int 0, whose float is +0.0; "-0.0" is -0.0
        return i, -0.0 if negative and not integer_form else 0.0, True, integer_form, 0, False
    value = 0.0
    exact = True
    if mantissa <= _TWO_53 and -22 <= scale <= 22:
        if scale >= 0:
            value = np.float64(mantissa) * _POW10_FLOAT[scale]
        else:
            value = np.float64(mantissa) / _POW10_FLOAT[-scale]
    else:
        decided = False
        if -_MAX_PRODUCT_SCALE <= scale <= _MAX_PRODUCT_SCALE:
            value, decided = _product_to_float(mantissa, scale)
        if decided:
            pass
        # 10^k = 5^k * 2^k: the power of two is exact in the exponent, so only 5^|k| (< 2^61 up
        # to k = 26) takes part in the integer arithmetic.
        elif 0 <= scale <= _MAX_POW5 and mantissa <= 9223372036854775807 // _POW5_INT[scale]:
            value = math.ldexp(_ratio_to_float(mantissa * _POW5_INT[scale], 1, 1), scale)
        elif -_MAX_POW5 <= scale < 0:
            value = math.ldexp(_ratio_to_float(mantissa, _POW5_INT[-scale], _POW5_BITS[-scale]), scale)
        else:
            exact = False
    if negative:
        value = -value
    return i, value, exact, integer_form, int_value, False


@numba.njit(cache=True, nogil=True, _nrt=False)
def _number_end(buffer, i, n):  # pragma: no cover - compiled
    """The end of the JSON number at `i`, or -1: `_scan_number`'s grammar, without the conversion
    (for numbers nobody reads)."""
    u, end = np.uint64(i), np.uint64(n)
    if buffer[u] == 45:  # '-'
        u += _U1
    if u >= end or not (48 <= buffer[u] <= 57):
        return -1
    if buffer[u] == 48:
        u += _U1
    else:
        u = _digits_end(buffer, u, end)
    if u < end and buffer[u] == 46:
        u += _U1
        if u >= end or not (48 <= buffer[u] <= 57):
            return -1
        u = _digits_end(buffer, u, end)
    if u < end and (buffer[u] == 101 or buffer[u] == 69):
        u += _U1
        if u < end and (buffer[u] == 43 or buffer[u] == 45):
            u += _U1
        if u >= end or not (48 <= buffer[u] <= 57):
            return -1
        u = _digits_end(buffer, u, end)
    return np.int64(u)


@numba.njit(cache=True, nogil=True, _nrt=False)
def _range_hash(buffer, start, end):  # pragma: no cover - compiled
    """64-bit hash (FNV-1a, then a final mix) of buffer[start:end]."""
    h = np.uint64(0xCBF29CE484222325)
    for j in range(start, end):
        h = (h ^ np.uint64(buffer[j])) * np.uint64(0x100000001B3)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return h


@numba.njit(cache=True, nogil=True)
def _range_hashes(buffer, start, end):  # pragma: no cover - compiled
    out = np.empty(start.shape[0], np.uint64)
    for r in range(start.shape[0]):
        out[r] = _range_hash(buffer, start[r], end[r])
    return out


@numba.njit(cache=True, nogil=True, _nrt=False)
def _row_hash(words, r):  # pragma: no cover - compiled
    h = np.uint64(0x9E3779B97F4A7C15)
    for j in range(words.shape[1]):
        h = (h ^ words[r, j]) * np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(29)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@numba.njit(cache=True, nogil=True, _nrt=False)
def _rows_equal(a, r, b, q):  # pragma: no cover - compiled
    for j in range(a.shape[1]):
        if a[r, j] != b[q, j]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _row_table(words):  # pragma: no cover - compiled
    """`StringIndex`'s table of the rows of `words` (N, W) uint64: (slots, the hash of each slot's
    row, whether two rows are equal); slots[s] = row or -1, a power-of-two size of at least twice
    the rows, probed linearly from hash & (size - 1)."""
    n = words.shape[0]
    size = 16
    while size < 2 * n:
        size *= 2
    mask = size - 1
    slots = np.full(size, -1, np.int64)
    slot_hashes = np.zeros(size, np.uint64)
    duplicate = False
    for r in range(n):
        h = _row_hash(words, r)
        s = np.int64(h & np.uint64(mask))
        while slots[s] >= 0:
            if slot_hashes[s] == h and _rows_equal(words, slots[s], words, r):
                duplicate = True
            s = (s + 1) & mask
        slots[s] = r
        slot_hashes[s] = h
    return slots, slot_hashes, duplicate


@numba.njit(cache=True, nogil=True)
def _row_lookup(words, slots, slot_hashes, queries, longer):  # pragma: no cover - compiled
    """The row of `words` equal to each row of `queries` (the first of equal rows), -1 where there
    is none or `longer` says the query has more bytes than the rows."""
    out = np.full(queries.shape[0], -1, np.int64)
    mask = slots.shape[0] - 1
    for q in range(queries.shape[0]):
        if longer[q]:
            continue
        h = _row_hash(queries, q)
        s = np.int64(h & np.uint64(mask))
        while slots[s] >= 0:
            r = slots[s]
            if slot_hashes[s] == h and _rows_equal(words, r, queries, q):
                out[q] = r
                break
            s = (s + 1) & mask
    return out


@numba.njit(cache=True, nogil=True)
def _copied_hashes(string_bytes, column, lengths):  # pragma: no cover - compiled
    """`_range_hash` of the first lengths[r] bytes of each copied string string_bytes[r, column]."""
    out = np.empty(string_bytes.shape[0], np.uint64)
    for r in range(string_bytes.shape[0]):
        out[r] = _range_hash(string_bytes[r, column], 0, lengths[r])
    return out


@numba.njit(cache=True, nogil=True)
def _wanted_table(matrix, lengths):  # pragma: no cover - compiled
    """Open-addressing hash table of the rows of `matrix` (row r: its first lengths[r] bytes):
    (slots, hashes), slots[s] = row or -1, a power-of-two size of at least twice the rows."""
    size = 16
    while size < 2 * matrix.shape[0]:
        size *= 2
    slots = np.full(size, -1, np.int64)
    hashes = np.zeros(size, np.uint64)
    mask = size - 1
    for r in range(matrix.shape[0]):
        h = _range_hash(matrix[r], 0, lengths[r])
        s = np.int64(h & np.uint64(mask))
        while slots[s] >= 0:
            s = (s + 1) & mask
        slots[s] = r
        hashes[s] = h
    return slots, hashes


@numba.njit(cache=True, nogil=True, _nrt=False)
def _is_wanted(buffer, start, end, slots, hashes, matrix, lengths):  # pragma: no cover - compiled
    """Whether buffer[start:end] equals a row of the `_wanted_table` (every byte compared)."""
    if slots.shape[0] == 0:
        return False
    h = _range_hash(buffer, start, end)
    mask = slots.shape[0] - 1
    s = np.int64(h & np.uint64(mask))
    length = end - start
    while slots[s] >= 0:
        r = slots[s]
        if hashes[s] == h and lengths[r] == length:
            same = True
            for j in range(length):
                if buffer[start + j] != matrix[r, j]:
                    same = False
                    break
            if same:
                return True
        s = (s + 1) & mask
    return False


@numba.njit(cache=True, nogil=True, _nrt=False)
def _literal(buffer, i, n):  # pragma: no cover - compiled
    """(end or -1, kind) of true / false / null at `i`."""
    c = buffer[i]
    if c == 116 and i + 4 <= n and buffer[i + 1] == 114 and buffer[i + 2] == 117 and buffer[i + 3] == 101:
        return i + 4, TRUE
    if (
        c == 102 and i + 5 <= n and buffer[i + 1] == 97 and buffer[i + 2] == 108
        and buffer[i + 3] == 115 and buffer[i + 4] == 101
    ):  # fmt: skip
        return i + 5, FALSE
    if c == 110 and i + 4 <= n and buffer[i + 1] == 117 and buffer[i + 2] == 108 and buffer[i + 3] == 108:
        return i + 4, NULL
    return -1, ABSENT


@numba.njit(cache=True, nogil=True, _nrt=False)
def _match_key(buffer, start, end, key_buffer, key_offsets, first_guess):  # pragma: no cover - compiled
    """The id of the wanted key equal to buffer[start:end], or -1. Records of one file list their
    keys in the same order, so the key after the previous match (`first_guess`) is tried first."""
    n_keys = key_offsets.shape[0] - 1
    length = end - start
    k = first_guess
    for _ in range(n_keys):
        if key_offsets[k + 1] - key_offsets[k] == length and _same_bytes(buffer, start, key_buffer, key_offsets[k], length):
            return k
        k = k + 1 if k + 1 < n_keys else 0  # (no division per attempt: an unwanted key tries them all)
    return -1


@numba.njit(cache=True, nogil=True, _nrt=False)
def _same_bytes(a, a_start, b, b_start, length):  # pragma: no cover - compiled
    """Whether a[a_start:a_start + length] == b[b_start:b_start + length] (both exist): 8 bytes at a
    time, then byte by byte."""
    ua, ub, n = np.uint64(a_start), np.uint64(b_start), np.uint64(length)
    j = np.uint64(0)
    while j + np.uint64(8) <= n:
        if _word(a, ua + j) != _word(b, ub + j):
            return False
        j += np.uint64(8)
    while j < n:
        if a[ua + j] != b[ub + j]:
            return False
        j += _U1
    return True


@numba.njit(cache=True, nogil=True, _nrt=False)
def _equals(buffer, start, end, word):  # pragma: no cover - compiled
    if end - start != len(word):
        return False
    for j in range(len(word)):
        if buffer[start + j] != word[j]:
            return False
    return True


_RESULTS_WORD = np.frombuffer(b"results", np.uint8).copy()
_META_WORD = np.frombuffer(b"meta", np.uint8).copy()


@numba.njit(cache=True, nogil=True, _nrt=False)
def _skip_record_rest(
    buffer, i, n, stack, depth, record, kind, element_count, element_kinds, string_start, string_end,
    string_flags, key_buffer, key_offsets, next_guess,
):  # pragma: no cover - compiled  # fmt: skip
    """Check the rest of a skipped record, from `i` (just after one of its fields, at `depth` =
    inside it) to just after its closing brace, as strictly as `_scan` would, recording only what
    `SkippedRecords` keeps of the wanted fields (no numbers). Returns (index, status, non-ASCII flag,
    next key guess); status 0 = understood, as `_scan`'s.

    Fields whose values are scalars or arrays of scalars (every nuScenes table's) are read one whole
    `"key": value,` at a time; from the first nested container on, `_check_record_rest` (one token
    at a time) takes over."""
    field_level = depth
    n_keys = key_offsets.shape[0] - 1
    non_ascii = 0
    while True:
        i = _skip_ws(buffer, i, n)
        if i >= n:
            return i, 1, non_ascii, next_guess
        c = buffer[i]
        if c == 125:  # '}': the record's end
            return i + 1, 0, non_ascii, next_guess
        if c != 44:
            return i, 1, non_ascii, next_guess
        i = _skip_ws(buffer, i + 1, n)
        if i >= n or buffer[i] != 34:
            return i, 1, non_ascii, next_guess
        end, flags = _scan_string(buffer, i, n)
        if end < 0:
            return i, 1, non_ascii, next_guess
        non_ascii |= flags & NON_ASCII
        field = _match_key(buffer, i + 1, end - 1, key_buffer, key_offsets, next_guess)
        if field >= 0:
            next_guess = field + 1 if field + 1 < n_keys else 0
        if flags != 0 or (field >= 0 and kind[record, field] != ABSENT):
            return i, 2, non_ascii, next_guess  # an escaped or a duplicate key, as in `_scan`
        i = _skip_ws(buffer, end, n)
        if i >= n or buffer[i] != 58:  # ':'
            return i, 1, non_ascii, next_guess
        i = _skip_ws(buffer, i + 1, n)
        if i >= n:
            return i, 1, non_ascii, next_guess
        c = buffer[i]
        if c == 123:  # an object value: token by token from here
            return _check_record_rest(
                buffer, i, n, stack, depth, field_level, _EXPECT_VALUE, field, record, kind, element_count,
                element_kinds, string_start, string_end, string_flags, key_buffer, key_offsets, next_guess, non_ascii,
            )  # fmt: skip
        if c == 91:  # '[': its elements, while they are scalars
            if field >= 0:
                kind[record, field] = ARRAY
            i = _skip_ws(buffer, i + 1, n)
            if i < n and buffer[i] == 93:
                i += 1
                continue
            while True:
                if i >= n:
                    return i, 1, non_ascii, next_guess
                c = buffer[i]
                if c == 123 or c == 91:
                    stack[depth] = _ARR
                    return _check_record_rest(
                        buffer, i, n, stack, depth + 1, field_level, _EXPECT_VALUE, field, record, kind,
                        element_count, element_kinds, string_start, string_end, string_flags, key_buffer,
                        key_offsets, next_guess, non_ascii,
                    )  # fmt: skip
                if c == 34:
                    end, flags = _scan_string(buffer, i, n)
                    non_ascii |= flags & NON_ASCII
                    value_kind = STRING
                elif c == 45 or (48 <= c <= 57):
                    end = _number_end(buffer, i, n)
                    value_kind = NUMBER
                else:
                    end, value_kind = _literal(buffer, i, n)
                if end < 0:
                    return i, 1, non_ascii, next_guess
                if field >= 0:
                    element_kinds[record, field] |= 1 << value_kind
                    element_count[record, field] += 1
                i = _skip_ws(buffer, end, n)
                if i >= n:
                    return i, 1, non_ascii, next_guess
                if buffer[i] == 93:
                    i += 1
                    break
                if buffer[i] != 44:
                    return i, 1, non_ascii, next_guess
                i = _skip_ws(buffer, i + 1, n)
            continue
        if c == 34:
            end, flags = _scan_string(buffer, i, n)
            if end < 0:
                return i, 1, non_ascii, next_guess
            non_ascii |= flags & NON_ASCII
            value_kind = STRING
            if field >= 0:
                string_start[record, field] = i + 1
                string_end[record, field] = end - 1
                string_flags[record, field] = flags
        elif c == 45 or (48 <= c <= 57):
            end = _number_end(buffer, i, n)
            value_kind = NUMBER
        else:
            end, value_kind = _literal(buffer, i, n)
        if end < 0:
            return i, 1, non_ascii, next_guess
        if field >= 0:
            kind[record, field] = value_kind
        i = end
    return i, 1, non_ascii, next_guess


@numba.njit(cache=True, nogil=True, _nrt=False)
def _check_record_rest(
    buffer, i, n, stack, depth, field_level, state, field, record, kind, element_count, element_kinds,
    string_start, string_end, string_flags, key_buffer, key_offsets, next_guess, non_ascii,
):  # pragma: no cover - compiled  # fmt: skip
    """`_skip_record_rest`, one token at a time, from `i` in `state` at `depth` (the record's
    fields are at level `field_level`), `field` the key id of the field being read (-1: not wanted)."""
    record_level = field_level - 1
    n_keys = key_offsets.shape[0] - 1
    while True:
        i = _skip_ws(buffer, i, n)
        if i >= n:
            return i, 1, non_ascii, next_guess
        c = buffer[i]
        if (state == _EXPECT_KEY_OR_CLOSE and c == 125) or (state == _EXPECT_VALUE_OR_CLOSE and c == 93):
            state = _EXPECT_COMMA_OR_CLOSE
        if state == _EXPECT_COMMA_OR_CLOSE:
            top = stack[depth - 1]
            if c == 44:  # ','
                i += 1
                state = _EXPECT_KEY if top == _OBJ else _EXPECT_VALUE
                continue
            if (c == 125 and top == _OBJ) or (c == 93 and top == _ARR):
                depth -= 1
                i += 1
                if depth == record_level:
                    return i, 0, non_ascii, next_guess
                continue
            return i, 1, non_ascii, next_guess
        if state == _EXPECT_KEY_OR_CLOSE or state == _EXPECT_KEY:
            if c != 34:
                return i, 1, non_ascii, next_guess
            end, flags = _scan_string(buffer, i, n)
            if end < 0:
                return i, 1, non_ascii, next_guess
            non_ascii |= flags & NON_ASCII
            if depth == field_level:
                field = _match_key(buffer, i + 1, end - 1, key_buffer, key_offsets, next_guess)
                if field >= 0:
                    next_guess = field + 1 if field + 1 < n_keys else 0
                if flags != 0 or (field >= 0 and kind[record, field] != ABSENT):
                    return i, 2, non_ascii, next_guess  # an escaped or a duplicate key, as in `_scan`
            i = _skip_ws(buffer, end, n)
            if i >= n or buffer[i] != 58:  # ':'
                return i, 1, non_ascii, next_guess
            i += 1
            state = _EXPECT_VALUE
            continue
        at_field = depth == field_level and field >= 0
        at_element = depth == field_level + 1 and field >= 0 and kind[record, field] == ARRAY
        if c == 123 or c == 91:
            if depth >= MAX_DEPTH:
                return i, 2, non_ascii, next_guess
            stack[depth] = _OBJ if c == 123 else _ARR
            depth += 1
            i += 1
            state = _EXPECT_KEY_OR_CLOSE if c == 123 else _EXPECT_VALUE_OR_CLOSE
            value_kind = OBJECT if c == 123 else ARRAY
            if at_field:
                kind[record, field] = value_kind
            elif at_element:
                element_kinds[record, field] |= 1 << value_kind
                element_count[record, field] += 1
            continue
        if c == 34:
            end, flags = _scan_string(buffer, i, n)
            if end < 0:
                return i, 1, non_ascii, next_guess
            non_ascii |= flags & NON_ASCII
            value_kind = STRING
            if at_field:
                string_start[record, field] = i + 1
                string_end[record, field] = end - 1
                string_flags[record, field] = flags
        elif c == 45 or (48 <= c <= 57):
            end = _number_end(buffer, i, n)
            value_kind = NUMBER
        else:
            end, value_kind = _literal(buffer, i, n)
        if end < 0:
            return i, 1, non_ascii, next_guess
        if at_field:
            kind[record, field] = value_kind
        elif at_element:
            element_kinds[record, field] |= 1 << value_kind
            element_count[record, field] += 1
        i = end
        state = _EXPECT_COMMA_OR_CLOSE


@numba.njit(cache=True, nogil=True, _nrt=False)
def _copy_string(buffer, start, end, string_words, record, column):  # pragma: no cover - compiled
    """buffer[start:end] into string_words[record, column] (COPIED_STRING_BYTES / 8 little-endian
    words), zero-padded, if it fits (column >= 0): a word at a time, the last one masked."""
    length = end - start
    if column < 0 or length > COPIED_STRING_BYTES:
        return
    n = np.uint64(buffer.shape[0])
    for w in range(COPIED_STRING_BYTES // 8):
        remaining = length - 8 * w
        if remaining <= 0:
            string_words[record, column, w] = 0
            continue
        u = np.uint64(start + 8 * w)
        if u + np.uint64(8) <= n:
            word = _word(buffer, u)  # may read past the string's end, never past the buffer's
        else:
            word = np.uint64(0)
            for j in range(remaining):
                word |= np.uint64(buffer[u + np.uint64(j)]) << np.uint64(8 * j)
        if remaining < 8:
            word &= (np.uint64(1) << np.uint64(8 * remaining)) - np.uint64(1)
        string_words[record, column, w] = word


@numba.njit(cache=True, nogil=True)
def _scan(
    buffer, begin, end_of_part, open_implied, close_implied, layout, key_buffer, key_offsets, slot_offsets,
    cap_records, cap_groups, slow_cap, filter_key, id_key, wanted_slots, wanted_hashes, wanted_matrix, wanted_lengths,
    copy_column, n_copied,
):  # pragma: no cover - compiled  # fmt: skip
    """The single pass (see `scan_records`). Returns (status row, arrays...); status 0 = understood.

    With `filter_key` >= 0 (TABLE layout), a record whose `filter_key` field is a plain string not
    in the wanted table (`_wanted_table`) is skipped from there on: its numbers are checked but not
    converted, and at its end it gives up its row, folded into the skipped-records summary.

    Only buffer[begin:end_of_part] is read (positions stay those of `buffer`), in pieces of a
    document cut between records (TABLE, `start_table_scan`) or between groups (RESULTS,
    `start_results_scan`): with `open_implied` as if the document's start up to there came before
    it (TABLE: a "["; RESULTS: `{"results": {` and a group, then a ","), with `close_implied` as if
    its end came after it (TABLE: a "]"; RESULTS: the end of the results object, then of the
    document). A RESULTS piece so closed must end just after a group of the results object."""
    n = end_of_part
    n_keys = key_offsets.shape[0] - 1
    skipped_hash = np.empty(cap_records if filter_key >= 0 else 0, np.uint64)
    skipped_kinds = np.zeros(n_keys, np.uint16)
    skipped_element_kinds = np.zeros(n_keys, np.uint8)
    skipped_count_min = np.full(n_keys, np.iinfo(np.int64).max, np.int64)
    skipped_count_max = np.zeros(n_keys, np.int64)
    skipped_string_flags = np.zeros(n_keys, np.uint8)
    n_skipped = 0
    # Rows are set when their record opens: only the rows used are ever written (a filtered scan
    # reuses the row of each skipped record).
    kind = np.empty((cap_records, n_keys), np.int8)
    values = np.empty((cap_records, slot_offsets[-1]), np.float64)
    int_values = np.empty((cap_records, n_keys), np.int64)
    number_flags = np.empty((cap_records, n_keys), np.uint8)
    element_count = np.empty((cap_records, n_keys), np.int64)
    element_kinds = np.empty((cap_records, n_keys), np.uint8)
    string_start = np.empty((cap_records, n_keys), np.int64)
    string_end = np.empty((cap_records, n_keys), np.int64)
    string_flags = np.empty((cap_records, n_keys), np.uint8)
    string_words = np.empty((cap_records, n_copied, COPIED_STRING_BYTES // 8), np.uint64)
    record_group = np.empty(cap_records, np.int64)
    group_key_start = np.zeros(cap_groups, np.int64)
    group_key_end = np.zeros(cap_groups, np.int64)
    group_size = np.zeros(cap_groups, np.int64)
    # Room for `slow_cap` numbers left to Python; beyond that they are only counted (the caller
    # scans again with more room: growing the arrays here would make every loop pass count
    # references to them).
    slow_start = np.empty(slow_cap, np.int64)
    slow_end = np.empty(slow_cap, np.int64)
    slow_dest = np.empty(slow_cap, np.int64)
    n_slow = 0

    record_level = 1 if layout == TABLE else 3
    field_level = record_level + 1
    element_level = record_level + 2
    stack = np.zeros(MAX_DEPTH + 1, np.uint8)
    key_start = np.zeros(MAX_DEPTH + 1, np.int64)
    key_end = np.zeros(MAX_DEPTH + 1, np.int64)
    key_flags = np.zeros(MAX_DEPTH + 1, np.uint8)
    depth = 0
    state = _EXPECT_VALUE
    record = -1
    group = -1
    field = -1  # key id of the current field of the current record, -1 = not wanted
    next_guess = 0
    in_scope = layout == TABLE
    results_seen = 0
    meta_start = -1
    meta_end = -1
    meta_open = False
    status = 0
    non_ascii = 0
    i = begin
    if open_implied and layout == TABLE:
        stack[0] = _ARR
        depth = 1
        state = _EXPECT_VALUE_OR_CLOSE
    elif open_implied:
        stack[0] = _OBJ
        stack[1] = _OBJ
        depth = 2
        state = _EXPECT_KEY  # the next group's key
        in_scope = True
        results_seen = 1
    while True:
        i = _skip_ws(buffer, i, n)
        if i >= n:
            if close_implied and layout == TABLE and depth == 1 and stack[0] == _ARR and state in (_EXPECT_COMMA_OR_CLOSE, _EXPECT_VALUE_OR_CLOSE):
                depth = 0
                state = _DONE
            if close_implied and layout == RESULTS and depth == 2 and in_scope and state == _EXPECT_COMMA_OR_CLOSE:
                depth = 0  # just after a group (depth 2 inside "results" holds only groups)
                state = _DONE
            if state != _DONE:
                status = 1
            break
        c = buffer[i]
        if state == _DONE:
            status = 1  # trailing data
            break
        if (state == _EXPECT_KEY_OR_CLOSE and c == 125) or (state == _EXPECT_VALUE_OR_CLOSE and c == 93):
            state = _EXPECT_COMMA_OR_CLOSE  # an empty container: handled as a close below
        if state == _EXPECT_KEY_OR_CLOSE or state == _EXPECT_KEY:
            if c != 34:
                status = 1
                break
            end, flags = _scan_string(buffer, i, n)
            if end < 0:
                status = 1
                break
            non_ascii |= flags & NON_ASCII
            key_start[depth] = i + 1
            key_end[depth] = end - 1
            key_flags[depth] = flags
            i = _skip_ws(buffer, end, n)
            if i >= n or buffer[i] != 58:  # ':'
                status = 1
                break
            i += 1
            state = _EXPECT_VALUE
            continue
        if state == _EXPECT_COMMA_OR_CLOSE:
            top = stack[depth - 1]
            if c == 44:  # ','
                i += 1
                state = _EXPECT_KEY if top == _OBJ else _EXPECT_VALUE
                continue
            if (c == 125 and top == _OBJ) or (c == 93 and top == _ARR):
                depth -= 1
                i += 1
                if depth == 1 and meta_open:
                    meta_end = i
                    meta_open = False
                state = _DONE if depth == 0 else _EXPECT_COMMA_OR_CLOSE
                continue
            status = 1
            break

        # A value at level `depth`: first what it is to us, then parse it.
        level = depth
        is_container = c == 123 or c == 91
        if level == 0:
            if (layout == TABLE and c != 91) or (layout == RESULTS and c != 123):
                status = 2
                break
        elif layout == RESULTS and level == 1:
            if key_flags[1] != 0:
                status = 2
                break
            in_scope = _equals(buffer, key_start[1], key_end[1], _RESULTS_WORD)
            if in_scope:
                results_seen += 1
                if c != 123 or results_seen > 1:
                    status = 2
                    break
            elif _equals(buffer, key_start[1], key_end[1], _META_WORD):
                if meta_start >= 0:
                    status = 2
                    break
                meta_start = i
                meta_open = True
        elif layout == RESULTS and level == 2 and in_scope:
            if c != 91 or key_flags[2] != 0:
                status = 2
                break
            group += 1
            if group >= cap_groups:
                status = _OUT_OF_ROOM
                break
            group_key_start[group] = key_start[2]
            group_key_end[group] = key_end[2]
        if in_scope and level == record_level:
            if c != 123:
                status = 2
                break
            record += 1
            if record + n_skipped >= cap_records:  # the records opened so far fill the room
                status = _OUT_OF_ROOM
                break
            for k in range(n_keys):
                kind[record, k] = ABSENT
                int_values[record, k] = 0
                number_flags[record, k] = 0
                element_count[record, k] = 0
                element_kinds[record, k] = 0
                string_start[record, k] = 0
                string_end[record, k] = 0
                string_flags[record, k] = 0
            for column in range(slot_offsets[-1]):
                values[record, column] = 0.0
            record_group[record] = max(group, 0)
            if group >= 0:
                group_size[group] += 1
        elif in_scope and level == field_level:
            field = _match_key(buffer, key_start[level], key_end[level], key_buffer, key_offsets, next_guess)
            if field >= 0:
                next_guess = field + 1 if field + 1 < n_keys else 0
            if key_flags[level] != 0:
                status = 2  # an escaped key might decode to a wanted one: let json read it
                break
            if field >= 0 and kind[record, field] != ABSENT:
                status = 2  # duplicate key: json keeps the last; let it decide
                break
        element = in_scope and level == element_level and field >= 0 and kind[record, field] == ARRAY
        storing_field = in_scope and level == field_level and field >= 0
        converting = storing_field or element

        if is_container:
            if depth >= MAX_DEPTH:
                status = 2
                break
            stack[depth] = _OBJ if c == 123 else _ARR
            depth += 1
            i += 1
            state = _EXPECT_KEY_OR_CLOSE if c == 123 else _EXPECT_VALUE_OR_CLOSE
            value_kind = OBJECT if c == 123 else ARRAY
            if storing_field:
                kind[record, field] = value_kind
            elif element:
                element_kinds[record, field] |= 1 << value_kind
                element_count[record, field] += 1
            continue

        if c == 34:
            end, flags = _scan_string(buffer, i, n)
            if end < 0:
                status = 1
                break
            non_ascii |= flags & NON_ASCII
            if storing_field:
                kind[record, field] = STRING
                string_start[record, field] = i + 1
                string_end[record, field] = end - 1
                string_flags[record, field] = flags
                _copy_string(buffer, i + 1, end - 1, string_words, record, copy_column[field])
                if (
                    field == filter_key and flags == 0
                    and not _is_wanted(buffer, i + 1, end - 1, wanted_slots, wanted_hashes, wanted_matrix, wanted_lengths)
                ):  # fmt: skip
                    # Not wanted: check the rest of the record, then fold its shape into the
                    # summary and free its row for the next record.
                    i, status, flags, next_guess = _skip_record_rest(
                        buffer, end, n, stack, depth, record, kind, element_count, element_kinds, string_start,
                        string_end, string_flags, key_buffer, key_offsets, next_guess,
                    )  # fmt: skip
                    non_ascii |= flags
                    if status != 0:
                        break
                    depth = record_level
                    skipped_hash[n_skipped] = 0
                    if id_key >= 0 and kind[record, id_key] == STRING:
                        skipped_hash[n_skipped] = _range_hash(buffer, string_start[record, id_key], string_end[record, id_key])
                    for k in range(n_keys):
                        skipped_kinds[k] |= np.uint16(1 << (kind[record, k] + 1))
                        skipped_element_kinds[k] |= element_kinds[record, k]
                        skipped_count_min[k] = min(skipped_count_min[k], element_count[record, k])
                        skipped_count_max[k] = max(skipped_count_max[k], element_count[record, k])
                        skipped_string_flags[k] |= string_flags[record, k]
                    n_skipped += 1
                    record -= 1
                    state = _EXPECT_COMMA_OR_CLOSE
                    continue
            elif element:
                if element_count[record, field] == 0 or not (element_kinds[record, field] & (1 << STRING)):
                    string_start[record, field] = i + 1
                    string_end[record, field] = end - 1
                    string_flags[record, field] = flags
                    _copy_string(buffer, i + 1, end - 1, string_words, record, copy_column[field])
                element_kinds[record, field] |= 1 << STRING
                element_count[record, field] += 1
            i = end
        elif (c == 45 or (48 <= c <= 57)) and not converting:
            end = _number_end(buffer, i, n)
            if end < 0:
                status = 1
                break
            if storing_field:
                kind[record, field] = NUMBER
            elif element:
                element_kinds[record, field] |= 1 << NUMBER
                element_count[record, field] += 1
            i = end
        elif c == 45 or (48 <= c <= 57):
            end, value, exact, integer_form, int_value, big = _scan_number(buffer, i, n)
            if end < 0:
                status = 1
                break
            slot = -1
            if storing_field:
                kind[record, field] = NUMBER
                slot = 0
                int_values[record, field] = int_value
            elif element:
                slot = element_count[record, field]
                element_kinds[record, field] |= 1 << NUMBER
                element_count[record, field] += 1
            if slot >= 0:
                if not integer_form:
                    number_flags[record, field] |= NOT_INTEGER_FORM
                if big:
                    number_flags[record, field] |= BIG_INTEGER
                if slot < slot_offsets[field + 1] - slot_offsets[field]:
                    column = slot_offsets[field] + slot
                    if exact:
                        values[record, column] = value
                    else:
                        if n_slow < slow_cap:
                            slow_start[n_slow] = i
                            slow_end[n_slow] = end
                            slow_dest[n_slow] = record * slot_offsets[-1] + column
                        n_slow += 1
            i = end
        else:
            end, literal_kind = _literal(buffer, i, n)
            if end < 0:
                status = 1  # includes NaN / Infinity, which json accepts: the caller falls back
                break
            if storing_field:
                kind[record, field] = literal_kind
            elif element:
                element_kinds[record, field] |= 1 << literal_kind
                element_count[record, field] += 1
            i = end
        if level == 1 and meta_open:
            meta_end = i
            meta_open = False
        state = _DONE if depth == 0 else _EXPECT_COMMA_OR_CLOSE

    if status == 0 and layout == RESULTS and results_seen != 1:
        status = 2
    header = (status, record + 1, group + 1, meta_start, meta_end, non_ascii, n_slow)
    return (
        header, kind, values, int_values, number_flags, element_count, element_kinds, string_start,
        string_end, string_flags, record_group, group_key_start, group_key_end, group_size,
        slow_start[: min(n_slow, slow_cap)], slow_end[: min(n_slow, slow_cap)], slow_dest[: min(n_slow, slow_cap)],
        skipped_hash[:n_skipped], skipped_kinds, skipped_element_kinds, skipped_count_min,
        skipped_count_max, skipped_string_flags, string_words,
    )  # fmt: skip
