"""The fast loading path (`jsonscan` + `fastload`) against `json` and the reference loaders.

Numbers must be bit-identical to `float()` of their text; tables and results files must give the
reference path's arrays exactly; and whatever the scanner does not fully understand must go to the
reference path, so that bad input keeps its clear error messages.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from avfusion.errors import InputError
from avfusion.eval import jsonscan
from avfusion.eval.config import default_config
from avfusion.eval.data import (
    load_ground_truth,
    load_ground_truth_reference,
    load_predictions,
    load_predictions_reference,
)
from avfusion.eval.fastload import results_columns_fast

VERSION = "v1.0-mini"
SPLIT = "synth_val"


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, np.float64).view(np.uint64)


def _number_texts(rng: np.random.Generator) -> list[str]:
    """Numbers as JSON writers print them, and the hard cases of decimal -> binary conversion."""
    magnitudes = 10.0 ** rng.uniform(-30, 30, 4000)
    values = rng.choice([-1.0, 1.0], 4000) * magnitudes * rng.random(4000)
    texts = [repr(float(v)) for v in values]  # shortest round trip: up to 17 digits
    texts += [repr(float(v)) for v in rng.normal(0, 100, 4000)]
    texts += [f"{v:.{p}e}" for v, p in zip(values[:1000], rng.integers(0, 20, 1000))]
    texts += [f"{v:.{p}f}" for v, p in zip(rng.normal(0, 50, 1000), rng.integers(0, 22, 1000))]
    texts += [str(int(i)) for i in rng.integers(-(2**62), 2**62, 500)]
    texts += [
        "0", "-0", "0.0", "-0.0", "0e0", "-0E-5", "1E+5", "1e22", "1e23", "9007199254740993",
        "9007199254740992.5", "123456789012345678", "1234567890123456789", "12345678901234567890123",
        "0.1", "0.3", "2.2250738585072014e-308", "4.9e-324", "1e-400", "1e400", "-1e400",
        "1.7976931348623157e308", "0.000000000000000000000000000001", "100000000000000000000000000000.5",
        "9.999999999999999e22", "8.98846567431158e307", "0.30000000000000004", "1.00000000000000011102230246251565",
        "3.141592653589793238462643383279", "5e-324", "2.4703282292062327e-324",
    ]  # fmt: skip
    # Exact ties between adjacent doubles (round half to even): odd integers above 2^53 and
    # halves above 2^52, both within the scanner's own exact division; and long near-ties.
    texts += [str(int(i) | 1) for i in rng.integers(2**53, 2**54, 300)]
    texts += [f"{int(i)}.5" for i in rng.integers(2**52, 2**53, 300)]
    texts += [f"{float(v):.30e}" for v in rng.uniform(1, 1000, 200)]
    return texts


def test_numbers_are_bit_identical_to_what_json_reads():
    texts = _number_texts(np.random.default_rng(0))
    document = "[" + ",".join('{"x": %s, "v": [%s, 1, -2.5, %s]}' % (t, t, t) for t in texts) + "]"
    scanned = jsonscan.scan_records(document.encode(), jsonscan.TABLE, {"x": 1, "v": 4})
    assert scanned is not None
    expected = np.array([float(json.loads(t)) for t in texts])  # "-0" is the int 0 to json
    assert np.array_equal(_bits(scanned.scalars("x")), _bits(expected))
    vectors = scanned.floats("v", 4)
    assert np.array_equal(_bits(vectors[:, 0]), _bits(expected))
    assert np.array_equal(_bits(vectors[:, 3]), _bits(expected))
    assert np.all(vectors[:, 1] == 1.0) and np.all(vectors[:, 2] == -2.5)
    assert math.copysign(1.0, scanned.scalars("x")[texts.index("-0.0")]) == -1.0
    assert math.copysign(1.0, scanned.scalars("x")[texts.index("-0")]) == 1.0


def test_digit_runs_of_every_length_read_as_json_reads_them():
    """Runs of digits are read 8 at a time while they fit the 18-digit mantissa: every length and
    position of a run (integer part, fraction after leading zeros, exponent) against `json`."""
    rng = np.random.default_rng(12)
    texts = []
    for length in range(1, 41):
        for _ in range(6):
            digits = "".join(rng.choice(list("0123456789"), length))
            whole = digits.lstrip("0") or "0"
            zeros = "0" * int(rng.integers(0, 12))
            texts += [whole, f"-{whole}", f"{int(rng.integers(0, 1000))}.{zeros}{digits}", f"0.{zeros}{digits}"]
            texts += [f"{whole}e-{int(rng.integers(0, 30))}", f"{whole[:1]}.{digits}E+{int(rng.integers(0, 30))}"]
    document = "[" + ",".join('{"x": %s}' % t for t in texts) + "]"
    scanned = jsonscan.scan_records(document.encode(), jsonscan.TABLE, {"x": 1})
    assert scanned is not None
    expected = [json.loads(t) for t in texts]
    assert np.array_equal(_bits(scanned.scalars("x")), _bits(np.array([float(v) for v in expected])))
    integer_rows = np.array([i for i, v in enumerate(expected) if isinstance(v, int) and abs(v) < 10**18])
    assert scanned.integers("x", integer_rows).tolist() == [expected[i] for i in integer_rows.tolist()]


def test_word_checks_agree_with_the_byte_checks():
    """`_eight_digits`, `_eight_digits_value` and `_plain_word` against byte-by-byte checks: every
    byte value at every position of a word, and random words."""
    rng = np.random.default_rng(13)

    def word(b: bytes) -> np.uint64:
        return np.uint64(int.from_bytes(b, "little"))

    for base in (b"55555555", b"abcdefgh"):
        for position in range(8):
            for c in range(256):
                b = bytearray(base)
                b[position] = c
                assert jsonscan._eight_digits(word(bytes(b))) == all(48 <= x <= 57 for x in b)
                assert jsonscan._plain_word(word(bytes(b))) == all(jsonscan._PLAIN_STRING_BYTE[x] for x in b)
    for _ in range(3000):
        b = bytes(rng.integers(0, 256, 8).tolist())
        assert jsonscan._eight_digits(word(b)) == all(48 <= x <= 57 for x in b)
        assert jsonscan._plain_word(word(b)) == all(jsonscan._PLAIN_STRING_BYTE[x] for x in b)
        digits = "".join(rng.choice(list("0123456789"), 8))
        assert jsonscan._eight_digits_value(word(digits.encode())) == int(digits)


def _near_ties(rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
    """(mantissa, scale) of 18-digit decimals next to the midpoint of two adjacent doubles, just
    below, on (when it has 18 digits) and just above it: where the 128-bit product must either
    decide right or give up."""
    from decimal import Decimal, getcontext

    getcontext().prec = 60
    cases = []
    for value in 10.0 ** rng.uniform(-200, 200, count):
        midpoint = (Decimal(float(value)) + Decimal(math.nextafter(float(value), math.inf))) / 2
        sign, digits, exponent = midpoint.normalize().as_tuple()
        digit_string = "".join(map(str, digits))
        head, scale = int(digit_string[:18]), exponent + max(0, len(digit_string) - 18)
        cases += [(head - 1, scale), (head, scale), (head + 1, scale)]
    return cases


def test_the_128_bit_product_is_correctly_rounded_or_gives_up():
    rng = np.random.default_rng(21)
    cases = [(int(rng.integers(1, 10 ** int(rng.integers(1, 19)))), int(rng.integers(-250, 251))) for _ in range(20000)]
    cases += [(int(rng.integers(10**16, 10**18)), int(rng.integers(-25, 5))) for _ in range(20000)]  # JSON writers' digits
    cases += _near_ties(rng, 3000)
    # Exact ties: odd integers between 2^53 and 2^54, also with trailing zeros, and halves above 2^52.
    odd = [int(i) | 1 for i in rng.integers(2**53, 2**54, 500)]
    cases += [(i, 0) for i in odd] + [(i * 10, -1) for i in odd] + [(i * 5, -1) for i in rng.integers(2**52, 2**53, 500).tolist()]
    cases += [(1, 0), (1, 250), (1, -250), (10**18 - 1, 250), (10**18 - 1, -250), (2**53 + 1, 0), (2**62 + 1, 55), (3, 56)]
    gave_up = 0
    for mantissa, scale in cases:
        value, decided = jsonscan._product_to_float(mantissa, scale)
        if not decided:
            gave_up += 1
            continue
        expected = float(f"{mantissa}e{scale}")
        assert value == expected and math.copysign(1.0, value) == 1.0, (mantissa, scale, value.hex(), expected.hex())
    # Ties of inexact powers of five (scale < 0 or > 55) are left to the exact paths; every other case is decided.
    assert gave_up <= 1000 + 3000 and gave_up < len(cases) / 20


def test_exact_ties_and_near_ties_read_as_json_reads_them():
    """Through the scanner: numbers the 128-bit product gives up on go to the exact integer paths
    or to Python, and still come out as float() has them."""
    rng = np.random.default_rng(22)
    texts = [f"{m}e{q}" for m, q in _near_ties(rng, 500)]
    texts += [f"{int(i) | 1}" for i in rng.integers(2**53, 2**54, 200)]
    texts += [f"{int(i)}.5" for i in rng.integers(2**52, 2**53, 200)]
    texts += [f"-{int(i) | 1}0e-1" for i in rng.integers(2**53, 2**54, 200)]
    texts += ["-0.0", "-0e-300", "0.000e5", "1e-250", "1e250", "9.99999999999999999e250", "123456789012345678e-268"]
    document = ("[" + ",".join('{"x": %s}' % t for t in texts) + "]").encode()
    scanned = jsonscan.scan_records(document, jsonscan.TABLE, {"x": 1})
    assert scanned is not None
    assert np.array_equal(_bits(scanned.scalars("x")), _bits(np.array([float(t) for t in texts])))


def test_fields_kinds_strings_and_groups():
    document = (
        b'{"meta": {"a": [1, {"b": 2}]}, "other": [{"x": 1}],\n "results": {"s1": [{"t": "ab", "n": 3,'
        b' "l": ["p", "q"], "o": {"t": 1}, "z": null}, {"t": "", "n": 2.0, "l": [], "o": true}], "s2": []}}'
    )
    scanned = jsonscan.scan_records(document, jsonscan.RESULTS, {"t": 0, "n": 1, "l": 0, "o": 0, "z": 0})
    assert scanned is not None and len(scanned) == 2
    assert json.loads(document[slice(*scanned.meta_range)]) == {"a": [1, {"b": 2}]}
    assert jsonscan.decode_strings(scanned.group_keys()) == ["s1", "s2"]
    assert scanned.group_size.tolist() == [2, 0] and scanned.record_group.tolist() == [0, 0]
    assert jsonscan.decode_strings(scanned.strings("t")) == ["ab", ""]
    assert scanned.kind[:, 3].tolist() == [jsonscan.OBJECT, jsonscan.TRUE]
    assert scanned.kind[:, 4].tolist() == [jsonscan.NULL, jsonscan.ABSENT]
    assert scanned.element_count[:, 2].tolist() == [2, 0]
    assert scanned.integers("n") is None  # 2.0 is a float to json, not an int
    assert scanned.integers("n", np.array([0])).tolist() == [3]


@pytest.mark.parametrize(
    "document",
    [
        b"", b"[", b"[{]", b'[{"a": 1,}]', b'[{"a": 1}],', b'[{"a" 1}]', b'[{"a": 01}]', b'[{"a": 1.}]',
        b'[{"a": -}]', b'[{"a": .5}]', b'[{"a": 1e}]', b'[{"a": "x\\q"}]', b'[{"a": "x\ny"}]', b'[{"a": tru}]',
        b'[{"a": NaN}]', b'[{"a": Infinity}]', b'[{"a": 1, "a": 2}]', b'[{"\\u0061": 1}]', b'{"a": 1}', b"[1, 2]",
        b'[{"a": "\xff"}]', b'\xef\xbb\xbf[{"a": 1}]', b'[{"a": 1}] x', b'[{"a": "\\u12"}]',
        b"[" * 300 + b"]" * 300,
    ],
)  # fmt: skip
def test_anything_unusual_is_left_to_json(document):
    assert jsonscan.scan_records(document, jsonscan.TABLE, {"a": 1}) is None


def test_random_corruptions_are_either_refused_or_read_as_json_reads_them():
    rng = np.random.default_rng(3)
    records = [
        {"a": float(rng.normal()), "v": rng.normal(size=3).tolist(), "s": f"tok{i}", "n": int(rng.integers(100))}
        for i in range(20)
    ]
    original = json.dumps(records).encode()
    alphabet = np.frombuffer(b'{}[],:"\\ -.e0123456789truefalsnul\n', np.uint8)
    accepted = 0
    for _ in range(400):
        mutated = bytearray(original)
        for position in rng.integers(0, len(mutated), rng.integers(1, 4)):
            mutated[position] = int(rng.choice(alphabet))
        scanned = jsonscan.scan_records(bytes(mutated), jsonscan.TABLE, {"a": 1, "v": 3, "s": 0, "n": 1})
        if scanned is None:
            continue
        parsed = json.loads(bytes(mutated))  # must not raise: the scanner accepted it
        accepted += 1
        assert len(scanned) == len(parsed)
        for row, record in enumerate(parsed):
            if isinstance(record.get("a"), float):
                assert _bits(scanned.number_slots("a")[row]) == _bits(np.array([record["a"]]))
            if isinstance(record.get("s"), str) and scanned.kind[row, 2] == jsonscan.STRING:
                start, end = scanned.string_start[row, 2], scanned.string_end[row, 2]
                assert json.loads(bytes(mutated)[start - 1 : end + 1]) == record["s"]
    assert accepted > 20  # digit changes and the like keep the file valid


def _string_texts(rng: np.random.Generator, count: int) -> list[str]:
    """Strings around the length of the scan's copies (`COPIED_STRING_BYTES`), empty ones included."""
    width = jsonscan.COPIED_STRING_BYTES
    lengths = rng.choice([0, 1, 7, 8, width - 1, width, width + 1, 2 * width + 3], count)
    return ["".join(rng.choice(list("0123456789abcdef"), int(n))) for n in lengths]


@pytest.mark.parametrize("longest", ["short", "long"])
def test_strings_copied_during_the_scan_equal_a_gather_from_the_file(longest):
    """`strings` and `strings_at` (from the copies made while scanning, when they hold every byte)
    give what `string_matrix` gathers from the file's bytes: same rows, same width."""
    rng = np.random.default_rng(5)
    texts = _string_texts(rng, 300)
    if longest == "short":
        texts = [t[: jsonscan.COPIED_STRING_BYTES] for t in texts]
    records = [
        {"s": t, "x": [1.5, 2], "l": [3, texts[-1 - i], "z"] if i % 3 else [], "n": i} for i, t in enumerate(texts)
    ]
    data = json.dumps(records).encode()
    scanned = jsonscan.scan_records(data, jsonscan.TABLE, {"s": 0, "x": 2, "l": 0, "n": 0})
    assert scanned is not None
    k = scanned.column("s")
    gathered = jsonscan.string_matrix(data, scanned.string_start[:, k], scanned.string_end[:, k])
    assert np.array_equal(scanned.strings("s"), gathered) and scanned.strings("s").shape == gathered.shape
    assert jsonscan.decode_strings(scanned.strings("s")) == texts
    rows = np.flatnonzero(scanned.element_count[:, scanned.column("l")] > 0)
    rows = rows[rng.permutation(len(rows))]
    first = scanned.strings_at("l", rows)
    assert jsonscan.decode_strings(first) == [texts[-1 - i] for i in rows.tolist()]
    k = scanned.column("l")
    assert np.array_equal(first, jsonscan.string_matrix(data, scanned.string_start[rows, k], scanned.string_end[rows, k]))


@pytest.mark.parametrize("parts", [1, 4])
def test_strings_of_a_filtered_scan_are_those_of_the_kept_records(parts):
    """Skipped records lend their rows to the next records: their strings never show through."""
    rng = np.random.default_rng(8)
    texts = _string_texts(rng, 400)
    records = [{"token": f"t{i}", "g": f"g{i % 5}", "s": t} for i, t in enumerate(texts)]
    data = json.dumps(records, indent=1).encode()
    fields = {"token": 0, "g": 0, "s": 0}
    kept = jsonscan.scan_table_in_parts(
        data, fields, jsonscan.RecordFilter("g", ["g1", "g3"], id_key="token"), parts=parts, min_part_bytes=256
    )
    assert kept is not None
    assert jsonscan.decode_strings(kept.strings("s")) == [t for i, t in enumerate(texts) if i % 5 in (1, 3)]
    assert jsonscan.decode_strings(kept.strings("token")) == [f"t{i}" for i in range(400) if i % 5 in (1, 3)]


def test_string_index_finds_exact_rows_only():
    keys = jsonscan.encode_strings(["abc", "ab", "", "abcd", "x" * 40])
    index = jsonscan.StringIndex(keys)
    assert index.unique
    queries = jsonscan.encode_strings(["ab", "abcd", "abcde", "", "y", "x" * 40, "x" * 41])
    assert index.lookup(queries).tolist() == [1, 3, -1, 2, -1, 4, -1]
    assert not jsonscan.StringIndex(jsonscan.encode_strings(["a", "b", "a"])).unique


def test_string_index_of_equal_keys_finds_the_first():
    keys = ["b", "a", "c", "a", "b", "b"]
    index = jsonscan.StringIndex(jsonscan.encode_strings(keys))
    assert not index.unique
    assert index.lookup(jsonscan.encode_strings(["a", "b", "c", "d"])).tolist() == [1, 0, 2, -1]


@pytest.mark.parametrize("query_width", [None, 8, 40])
def test_string_index_lookups_equal_a_dict(query_width):
    """Many keys and queries in random order (the table is probed in hash order): each answer is
    the dict's, whatever the queries' own width (zero padding, or longer rows)."""
    rng = np.random.default_rng(31)
    keys = sorted({"".join(rng.choice(list("0123456789abcdef"), int(rng.integers(1, 33)))) for _ in range(5000)})
    keys = [keys[i] for i in rng.permutation(len(keys))]
    row_of = {key: row for row, key in enumerate(keys)}
    queries = [keys[i] for i in rng.integers(0, len(keys), 3000)] + ["zz", "", keys[0] + "0", keys[1][:-1]]
    queries = [queries[i] for i in rng.permutation(len(queries))]
    index = jsonscan.StringIndex(jsonscan.encode_strings(keys))
    assert index.unique
    width = None if query_width is None else max(query_width, max(map(len, queries)))
    found = index.lookup(jsonscan.encode_strings(queries, width))
    assert found.tolist() == [row_of.get(q, -1) for q in queries]
    assert index.lookup(np.zeros((0, 8), np.uint8)).shape == (0,)
    assert jsonscan.StringIndex(np.zeros((0, 4), np.uint8)).lookup(jsonscan.encode_strings(["a"])).tolist() == [-1]


def _assert_same_arrays(a, b) -> None:
    for name in a.__slots__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), name
        else:
            assert x == y, name


def test_fast_ground_truth_equals_the_reference_loader(minimal_log):
    from avfusion.eval.data import _split_samples
    from avfusion.eval.fastload import ground_truth_fast

    for split in (SPLIT, "synth_train"):
        fast = ground_truth_fast(minimal_log, VERSION, split, _split_samples(minimal_log, VERSION, split))
        assert fast is not None  # the fast path is taken on a well-formed log
        reference = load_ground_truth_reference(minimal_log, VERSION, split)
        _assert_same_arrays(fast.boxes, reference.boxes)
        _assert_same_arrays(fast.bike_racks, reference.bike_racks)
        assert np.array_equal(fast.ego_translation, reference.ego_translation)
        assert fast.predefined_split == reference.predefined_split
    assert len(reference.bike_racks.sample_index) or len(fast.bike_racks.sample_index)


def test_fast_predictions_equal_the_reference_loader(minimal_log, predictions_for, tmp_path):
    config = default_config()
    ground_truth = load_ground_truth(minimal_log, VERSION, SPLIT)
    payload = predictions_for(minimal_log, seed=11)
    first = next(token for token, boxes in payload["results"].items() if boxes)
    payload["results"][first][0]["num_pts"] = 0  # the devkit drops it; so must we
    payload["results"][first][1]["ego_translation"] = [1.0, 2.0, 3.0]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(payload, indent=1))
    assert results_columns_fast(path.read_bytes(), ground_truth.sample_tokens, config.max_boxes_per_sample) is not None
    fast = load_predictions(path, ground_truth, config)
    reference = load_predictions_reference(path, ground_truth, config)
    _assert_same_arrays(fast.boxes, reference.boxes)
    assert fast.meta == reference.meta
    assert fast.boxes.num_pts.tolist().count(0) == 1


def _mutations():
    def set_box(field, value):
        def apply(payload):
            token = next(t for t, boxes in payload["results"].items() if boxes)
            payload["results"][token][0][field] = value
        return apply

    def drop_box_field(field):
        def apply(payload):
            token = next(t for t, boxes in payload["results"].items() if boxes)
            del payload["results"][token][0][field]
        return apply

    def top(fn):
        return fn

    return [
        set_box("translation", [1.0, 2.0]),
        set_box("size", [1.0, -2.0, 1.0]),
        set_box("rotation", [1.0, 1.0, 0.0, 0.0]),
        set_box("detection_name", "cat"),
        set_box("attribute_name", "vehicle.flying"),
        set_box("detection_score", True),
        set_box("detection_score", "0.5"),
        set_box("num_pts", 3.5),
        set_box("ego_translation", [1.0, "x", 2.0]),
        set_box("sample_token", "elsewhere"),
        set_box("velocity", [math.nan, 0.0]),
        drop_box_field("size"),
        top(lambda p: p["results"].pop(next(iter(p["results"])))),
        top(lambda p: p["results"].__setitem__("not-a-sample", [])),
        top(lambda p: p.pop("meta")),
        top(lambda p: p.__setitem__("meta", [1])),
        top(lambda p: p["results"].__setitem__(next(iter(p["results"])), {"a": 1})),
    ]


@pytest.mark.parametrize("mutate", _mutations())
def test_bad_results_files_get_the_reference_errors(minimal_log, predictions_for, tmp_path, mutate):
    config = default_config()
    ground_truth = load_ground_truth(minimal_log, VERSION, SPLIT)
    payload = copy.deepcopy(predictions_for(minimal_log, seed=2))
    mutate(payload)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(payload))
    assert results_columns_fast(path.read_bytes(), ground_truth.sample_tokens, config.max_boxes_per_sample) is None
    with pytest.raises(InputError) as fast_error:
        load_predictions(path, ground_truth, config)
    with pytest.raises(InputError) as reference_error:
        load_predictions_reference(path, ground_truth, config)
    assert str(fast_error.value) == str(reference_error.value)


def _dangling_prev(annotation):
    annotation["prev"] = "no-such-annotation"


def _short_translation(annotation):
    annotation["translation"] = [1.0, 2.0]


def _two_attributes(annotation):
    annotation["attribute_tokens"] = annotation["attribute_tokens"] * 2 or ["x", "y"]


@pytest.mark.parametrize("breakage", [_dangling_prev, _short_translation, _two_attributes])
def test_a_broken_table_gets_the_reference_error(write_log, tmp_path, breakage):
    root = write_log(tmp_path / "log", seed=4, scenes=3, samples_per_scene=3)
    annotations_path = root / VERSION / "sample_annotation.json"
    annotations = json.loads(annotations_path.read_text())
    for annotation in annotations:
        breakage(annotation)
    annotations_path.write_text(json.dumps(annotations))
    with pytest.raises(InputError) as fast_error:
        load_ground_truth(root, VERSION, SPLIT)
    with pytest.raises(InputError) as reference_error:
        load_ground_truth_reference(root, VERSION, SPLIT)
    assert str(fast_error.value) == str(reference_error.value)


# ----------------------------------------------------------------------------------------------
# Big tables: memory-mapped reads and the two-halves scan


def _assert_same_scan(a: jsonscan.ScannedRecords, b: jsonscan.ScannedRecords) -> None:
    assert a.keys == b.keys and a.meta_range == b.meta_range
    for name in ("kind", "values", "int_values", "number_flags", "element_count", "element_kinds",
                 "string_start", "string_end", "string_flags", "record_group", "group_size"):  # fmt: skip
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name


HALF_FIELDS = {"token": 0, "translation": 3, "attribute_tokens": 0, "n": 0}


def _table_bytes(records: list[dict]) -> bytes:
    return json.dumps(records, indent=0).encode()


@pytest.mark.parametrize("parts", [2, 3, 7, 64])
def test_a_scan_in_parts_equals_one_pass(parts: int) -> None:
    rng = np.random.default_rng(7)
    records = []
    for i in range(200):
        record = {"token": f"tok{i:04d}", "translation": rng.normal(size=3).tolist(), "n": int(rng.integers(0, 99))}
        if i % 3:
            record["attribute_tokens"] = [f"attr{i % 5}"]  # absent in every third record
        if i % 7 == 0:
            record["nested"] = [{"a": 1}, {"b": [2, 3]}]
        records.append(record)
    data = _table_bytes(records)
    ranges = jsonscan.table_parts(data, parts, min_part_bytes=1)
    assert len(ranges) == parts and ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(data[end - 1 : end] == b"}" and data[begin : begin + 1] == b"{" for (_, end), (begin, _) in zip(ranges, ranges[1:]))
    in_parts = jsonscan.scan_table_in_parts(data, HALF_FIELDS, parts=parts, min_part_bytes=1)
    one = jsonscan.scan_records(data, jsonscan.TABLE, HALF_FIELDS)
    assert in_parts is not None and len(in_parts) == 200
    _assert_same_scan(in_parts, one)
    assert jsonscan.decode_strings(in_parts.strings("token")) == [r["token"] for r in records]


def test_a_small_table_is_one_part() -> None:
    data = _table_bytes([{"token": "a"}, {"token": "b"}])
    assert jsonscan.table_parts(data, 4, min_part_bytes=len(data)) == [(0, len(data))]
    assert jsonscan.table_parts(b"[]", 4, min_part_bytes=1) == [(0, 2)]  # no record boundary to cut at


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize(
    "middle",
    [
        {"token": "x" * 40 + "},{" + "y" * 40, "n": 1},  # a record boundary look-alike inside a string
        {"token": "z", "n": 2, "nested": [{"a": 1}, {"b": 2}] * 20},  # ... inside a nested value
    ],
)
def test_a_cut_in_the_wrong_place_falls_back_to_one_pass(middle: dict, parts: int) -> None:
    records = [{"token": "a", "n": 0}, middle, {"token": "b", "n": 3}]
    data = json.dumps(records, separators=(",", ":")).encode()
    # The search for the (first) cut starts inside the look-alike.
    start = len(data) // parts
    assert data.find(b'{"token":"a"') < start <= data.find(b"},{", start) < data.find(b'{"token":"b"')
    in_parts = jsonscan.scan_table_in_parts(data, HALF_FIELDS, parts=parts, min_part_bytes=1)
    assert in_parts is not None
    _assert_same_scan(in_parts, jsonscan.scan_records(data, jsonscan.TABLE, HALF_FIELDS))
    assert jsonscan.decode_strings(in_parts.strings("token")) == [r["token"] for r in records]


def test_a_part_that_is_not_json_refuses_the_document() -> None:
    records = [{"token": f"t{i}", "n": i} for i in range(40)]
    data = bytearray(_table_bytes(records))
    ranges = jsonscan.table_parts(bytes(data), 4, min_part_bytes=1)
    begin, end = ranges[2]
    data[begin + 1 : begin + 1] = b"tru,"  # inside the third part: a broken literal
    assert jsonscan.scan_table_in_parts(bytes(data), HALF_FIELDS, parts=4, min_part_bytes=1) is None


def test_read_file_mapped_gives_the_file_bytes(tmp_path, monkeypatch) -> None:
    path = tmp_path / "table.json"
    path.write_bytes(b'[{"token": "a"}]')
    assert jsonscan.read_file_mapped(path) == b'[{"token": "a"}]'  # small: plain bytes
    monkeypatch.setattr(jsonscan, "_MAP_MIN_BYTES", 1)
    mapped = jsonscan.read_file_mapped(path)
    assert not isinstance(mapped, bytes)
    assert mapped[:] == b'[{"token": "a"}]' and len(mapped) == 16
    records = jsonscan.scan_records(mapped, jsonscan.TABLE, {"token": 0})
    assert records is not None and jsonscan.decode_strings(records.strings("token")) == ["a"]
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    assert jsonscan.read_file_mapped(empty) == b""  # mmap cannot map an empty file


# ----------------------------------------------------------------------------------------------
# Filtered scans: the records of other samples are checked but not kept


FILTER_FIELDS = {"token": 0, "sample_token": 0, "translation": 3, "n": 1}


def _filtered(data: bytes, wanted: list[str]) -> jsonscan.ScannedRecords | None:
    return jsonscan.scan_records(data, jsonscan.TABLE, FILTER_FIELDS, jsonscan.RecordFilter("sample_token", wanted, id_key="token"))


def _assert_rows_equal(kept: jsonscan.ScannedRecords, full: jsonscan.ScannedRecords, rows: list[int]) -> None:
    for name in ("kind", "values", "int_values", "number_flags", "element_count", "element_kinds", "string_start",
                 "string_end", "string_flags"):  # fmt: skip
        assert np.array_equal(getattr(kept, name), getattr(full, name)[rows]), name


def test_a_filtered_scan_keeps_exactly_the_wanted_records_in_table_order() -> None:
    rng = np.random.default_rng(12)
    samples = [f"sample{i}" for i in range(6)]
    records = []
    for i in range(60):
        record = {"token": f"ann{i:03d}", "sample_token": samples[i % 6], "translation": rng.normal(size=3).tolist(), "n": i}
        if i % 4 == 1:
            record = {"n": i, "translation": record["translation"], "sample_token": record["sample_token"], "token": record["token"]}
        records.append(record)
    records[7]["extra"] = {"sample_token": "sample1", "token": "nested"}  # a nested key is not the record's
    data = json.dumps(records).encode()
    wanted = ["sample1", "sample4", "no-such-sample"]
    kept = _filtered(data, wanted)
    full = jsonscan.scan_records(data, jsonscan.TABLE, FILTER_FIELDS)
    assert kept is not None and full is not None
    rows = [i for i, r in enumerate(records) if r["sample_token"] in wanted]
    assert len(kept) == len(rows) and len(kept.skipped) == len(records) - len(rows)
    _assert_rows_equal(kept, full, rows)
    assert jsonscan.decode_strings(kept.strings("token")) == [records[i]["token"] for i in rows]
    assert np.array_equal(_bits(kept.floats("translation", 3)), _bits(full.floats("translation", 3)[rows]))
    assert kept.ids_distinct("token")
    assert kept.skipped.plain_strings(kept.column("token")) and kept.skipped.number_arrays(kept.column("translation"), 3)


def test_a_filtered_scan_keeps_records_it_cannot_decide_on() -> None:
    records = [
        {"token": "a", "sample_token": "s1", "n": 1},
        {"token": "b", "sample_token": "s2", "n": 2},  # skipped
        {"token": "c", "n": 3},  # no sample token
        {"token": "d", "sample_token": 5, "n": 4},  # not a string
        {"token": "e", "sample_token": "s\u00e9", "n": 5},  # not ASCII
        {"token": "f", "sample_token": ["s1"], "n": 6},  # the wanted token inside a list
    ]
    data = json.dumps(records, ensure_ascii=False).encode()
    escaped = data.replace(b'"sample_token": "s2"', b'"sample_token": "s\\u0031"')  # decodes to a wanted "s1"
    for document, skipped in ((data, 1), (escaped, 0)):
        kept = _filtered(document, ["s1"])
        assert kept is not None and len(kept.skipped) == skipped
        assert len(kept) == len(records) - skipped
        assert kept.strings("sample_token") is None  # the undecided ones are not plain strings


def test_a_split_token_in_other_fields_does_not_keep_a_record() -> None:
    records = [
        {"token": "s1", "sample_token": "s2", "n": 1},  # the wanted token as the record's own token
        {"token": "x", "sample_token": "s2", "n": 2, "prev": "s1", "s1": "s1"},  # as a value and a key
        {"token": "y", "sample_token": "s1", "n": 3},
        {"token": "z", "sample_token": "s22", "n": 4},  # a longer token with the wanted one as prefix
        {"token": "w", "sample_token": "s", "n": 5},  # and a prefix of it
    ]
    kept = _filtered(json.dumps(records).encode(), ["s1"])
    assert kept is not None and len(kept) == 1 and len(kept.skipped) == 4
    assert jsonscan.decode_strings(kept.strings("token")) == ["y"]


@pytest.mark.parametrize(
    "bad_record",
    [
        b'{"token": "b", "sample_token": "s2", "n": 01}', b'{"token": "b", "sample_token": "s2", "n": 1.}',
        b'{"token": "b", "sample_token": "s2", "n": -}', b'{"token": "b", "sample_token": "s2", "n": 1e+}',
        b'{"token": "b", "sample_token": "s2", "n": NaN}', b'{"token": "b", "sample_token": "s2", "translation": [1, 2,]}',
        b'{"token": "b", "sample_token": "s2", "x": "a\\qb"}', b'{"token": "b", "sample_token": "s2", "x": "\xff"}',
        b'{"token": "b", "sample_token": "s2", "n": 1, "n": 2}', b'{"token": "b", "sample_token": "s2", "sample_token": "s1"}',
        b'{"token": "b", "sample_token": "s2", "\\u006e": 1}', b'{"token": "b", "sample_token": "s2", "n": tru}',
        b'{"token": "b", "sample_token": "s2" "n": 1}', b'{"token": "b", "sample_token": "s2", "n": 1',
    ],
)  # fmt: skip
def test_a_skipped_record_that_is_not_plain_json_still_refuses_the_document(bad_record: bytes) -> None:
    good = b'{"token": "a", "sample_token": "s1", "translation": [1, 2, 3], "n": 1}'
    document = b"[" + good + b", " + bad_record + b", " + good.replace(b'"a"', b'"c"') + b"]"
    assert _filtered(document, ["s1"]) is None
    assert jsonscan.scan_records(document, jsonscan.TABLE, FILTER_FIELDS) is None


@pytest.mark.parametrize(
    ("skipped_record", "check"),
    [
        ({"token": "b", "sample_token": "s2", "translation": [1.0, 2.0]}, lambda r: r.floats("translation", 3)),
        ({"token": "b", "sample_token": "s2", "translation": [1.0, 2.0, "x"]}, lambda r: r.floats("translation", 3)),
        ({"token": "b", "sample_token": "s2"}, lambda r: r.floats("translation", 3)),
        ({"token": 7, "sample_token": "s2", "translation": [1, 2, 3]}, lambda r: r.strings("token")),
        ({"token": "b\\n", "sample_token": "s2", "translation": [1, 2, 3]}, lambda r: r.strings("token")),
        ({"token": "b", "sample_token": "s2", "translation": [1, 2, 3], "n": "1"}, lambda r: r.scalars("n")),
    ],
)
def test_the_shape_of_skipped_records_is_checked_as_if_they_were_kept(skipped_record, check) -> None:
    good = {"token": "a", "sample_token": "s1", "translation": [1.0, 2.0, 3.0], "n": 1}
    document = json.dumps([good, skipped_record]).encode().replace(b"\\\\n", b"\\n")
    kept = _filtered(document, ["s1"])
    full = jsonscan.scan_records(document, jsonscan.TABLE, FILTER_FIELDS)
    assert kept is not None and len(kept) == 1 and len(kept.skipped) == 1
    assert check(kept) is None and check(full) is None
    assert check(_filtered(json.dumps([good]).encode(), ["s1"])) is not None


@pytest.mark.parametrize("pad", ["", "p" * 31, "q" * 40])  # ids hashed from the scan's copies, or from the file
def test_a_skipped_id_equal_to_another_id_is_seen(pad: str) -> None:
    records = [
        {"token": pad + "a", "sample_token": "s1"},
        {"token": pad + "b", "sample_token": "s2"},
        {"token": pad + "c", "sample_token": "s2"},
    ]
    assert _filtered(json.dumps(records).encode(), ["s1"]).ids_distinct("token")
    for duplicate in ("a", "b"):  # the same id as a kept record, or as another skipped one
        changed = [*records, {"token": pad + duplicate, "sample_token": "s3"}]
        assert not _filtered(json.dumps(changed).encode(), ["s1"]).ids_distinct("token")


def test_hashes_of_the_scan_copies_equal_hashes_of_the_file_bytes() -> None:
    texts = _string_texts(np.random.default_rng(15), 200)
    data = json.dumps([{"s": t} for t in texts]).encode()
    scanned = jsonscan.scan_records(data, jsonscan.TABLE, {"s": 0})
    start, end = scanned.string_start[:, 0], scanned.string_end[:, 0]
    short = np.flatnonzero(end - start <= jsonscan.COPIED_STRING_BYTES)
    from_copies = jsonscan._copied_hashes(scanned.string_bytes[short], 0, (end - start)[short])
    assert np.array_equal(from_copies, jsonscan._range_hashes(np.frombuffer(data, np.uint8), start[short], end[short]))


@pytest.mark.parametrize("parts", [2, 5])
def test_a_filtered_scan_in_parts_equals_one_filtered_pass(parts: int) -> None:
    rng = np.random.default_rng(8)
    records = [
        {"token": f"tok{i:04d}", "sample_token": f"s{i % 5}", "translation": rng.normal(size=3).tolist(), "n": i}
        for i in range(300)
    ]
    records[250]["translation"] = [1.0]  # a skipped one, in the last part
    data = _table_bytes(records)
    keep = jsonscan.RecordFilter("sample_token", ["s0", "s3"], id_key="token")
    in_parts = jsonscan.scan_table_in_parts(data, FILTER_FIELDS, keep, parts=parts, min_part_bytes=1)
    one = jsonscan.scan_records(data, jsonscan.TABLE, FILTER_FIELDS, keep)
    assert in_parts is not None and len(in_parts) == 120
    _assert_same_scan(in_parts, one)
    assert np.array_equal(in_parts.skipped.id_hash, one.skipped.id_hash)
    for name in ("kinds", "element_kinds", "element_count_min", "element_count_max", "string_flags"):
        assert np.array_equal(getattr(in_parts.skipped, name), getattr(one.skipped, name)), name
    assert in_parts.floats("translation", 3) is None  # the short skipped one still counts


def test_a_record_filter_needs_wanted_string_fields() -> None:
    with pytest.raises(ValueError):
        jsonscan.scan_records(b"[]", jsonscan.TABLE, {"n": 1}, jsonscan.RecordFilter("n", ["1"]))
    with pytest.raises(ValueError):
        jsonscan.scan_records(b"{}", jsonscan.RESULTS, {"s": 0}, jsonscan.RecordFilter("s", ["1"]))


def _other_split_samples(root) -> set[str]:
    """The sample tokens of the log that are not in SPLIT."""
    version_dir = root / VERSION
    in_split = set(json.loads((version_dir / "splits.json").read_text())[SPLIT])
    scene_name = {s["token"]: s["name"] for s in json.loads((version_dir / "scene.json").read_text())}
    return {s["token"] for s in json.loads((version_dir / "sample.json").read_text()) if scene_name[s["scene_token"]] not in in_split}


def _rewrite(root, table: str, change) -> None:
    path = root / VERSION / f"{table}.json"
    records = json.loads(path.read_text())
    change(records)
    path.write_text(json.dumps(records))


def _assert_fast_equals_reference(root) -> None:
    fast = load_ground_truth(root, VERSION, SPLIT)
    reference = load_ground_truth_reference(root, VERSION, SPLIT)
    _assert_same_arrays(fast.boxes, reference.boxes)
    _assert_same_arrays(fast.bike_racks, reference.bike_racks)
    assert np.array_equal(fast.ego_translation, reference.ego_translation)


def test_a_track_that_crosses_the_split_is_read_by_the_unfiltered_scan(write_log, tmp_path):
    from avfusion.eval.data import _split_samples
    from avfusion.eval.fastload import ground_truth_fast

    root = write_log(tmp_path / "log", seed=5, scenes=3, samples_per_scene=4)
    other = _other_split_samples(root)

    def link(annotations):
        # The first annotation of a split track continues one that ends outside the split.
        ending = next(a for a in annotations if a["sample_token"] in other and not a["next"])
        starting = next(a for a in annotations if a["sample_token"] not in other and not a["prev"] and a["next"])
        ending["next"], starting["prev"] = starting["token"], ending["token"]

    _rewrite(root, "sample_annotation", link)
    assert ground_truth_fast(root, VERSION, SPLIT, _split_samples(root, VERSION, SPLIT)) is not None
    _assert_fast_equals_reference(root)


def _outside(other, change):
    def apply(records):
        for record in records:
            if record.get("sample_token") in other:
                change(record)
    return apply


def _first_two_outside(other):
    def apply(records):
        first, second = [r for r in records if r["sample_token"] in other][:2]
        second["token"] = first["token"]
    return apply


@pytest.mark.parametrize(
    ("table", "breakage"),
    [
        ("sample_annotation", lambda other: _outside(other, lambda a: a.__setitem__("translation", [1.0, 2.0]))),
        ("sample_annotation", lambda other: _outside(other, lambda a: a.pop("instance_token"))),
        ("sample_annotation", lambda other: _outside(other, lambda a: a.__setitem__("token", 17))),
        ("sample_annotation", _first_two_outside),
        ("sample_data", lambda other: _outside(other, lambda d: d.__setitem__("is_key_frame", 1))),
        ("sample_data", lambda other: _outside(other, lambda d: d.__setitem__("calibrated_sensor_token", None))),
        ("ego_pose", lambda other: lambda poses: poses[-1].__setitem__("translation", "here")),
    ],
)
def test_odd_records_outside_the_split_make_the_fast_path_step_aside_as_before(write_log, tmp_path, table, breakage):
    """The reference path does not read most fields of the records of other samples, so it gives
    the same ground truth; the fast path, which before skipping checked every record's shape, still
    leaves such a table to it."""
    from avfusion.eval.data import _split_samples
    from avfusion.eval.fastload import ground_truth_fast

    root = write_log(tmp_path / "log", seed=6, scenes=3, samples_per_scene=4)
    _rewrite(root, table, breakage(_other_split_samples(root)))
    assert ground_truth_fast(root, VERSION, SPLIT, _split_samples(root, VERSION, SPLIT)) is None
    _assert_fast_equals_reference(root)


def test_more_numbers_left_to_python_than_the_first_pass_has_room_for() -> None:
    texts = [f"{k}.{k}e{250 + k % 50}" for k in range(3000)]  # exponents beyond the exact integer path
    document = ("[" + ",".join('{"x": %s}' % t for t in texts) + "]").encode()
    scanned = jsonscan.scan_records(document, jsonscan.TABLE, {"x": 1})
    assert scanned is not None
    assert np.array_equal(_bits(scanned.scalars("x")), _bits(np.array([float(t) for t in texts])))


# ----------------------------------------------------------------------------------------------
# Ground truth and predictions loaded together


def _load_both_in_turn(root, path, config):
    ground_truth = load_ground_truth(root, VERSION, SPLIT)
    return ground_truth, load_predictions(path, ground_truth, config)


def test_loading_both_at_once_equals_loading_them_in_turn(minimal_log, predictions_for, tmp_path):
    from avfusion.eval.data import load_ground_truth_and_predictions

    config = default_config()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(predictions_for(minimal_log, seed=12)))
    ground_truth, predictions = load_ground_truth_and_predictions(minimal_log, VERSION, SPLIT, path, config)
    expected_truth, expected = _load_both_in_turn(minimal_log, path, config)
    _assert_same_arrays(ground_truth.boxes, expected_truth.boxes)
    _assert_same_arrays(ground_truth.bike_racks, expected_truth.bike_racks)
    assert np.array_equal(ground_truth.ego_translation, expected_truth.ego_translation)
    _assert_same_arrays(predictions.boxes, expected.boxes)
    assert predictions.meta == expected.meta and len(predictions.boxes) > 0


@pytest.mark.parametrize("broken", ["results", "table", "both", "missing results"])
def test_loading_both_at_once_raises_what_loading_them_in_turn_raises(write_log, predictions_for, tmp_path, broken):
    """The ground truth's error first; the results file's only when the tables are fine."""
    from avfusion.eval.data import load_ground_truth_and_predictions

    config = default_config()
    root = write_log(tmp_path / "log", seed=9, scenes=3, samples_per_scene=3)
    payload = predictions_for(root, seed=3)
    if broken in ("results", "both"):
        next(boxes for boxes in payload["results"].values() if boxes)[0]["size"] = [1.0, 0.0, 1.0]
    path = tmp_path / "results.json"
    if broken != "missing results":
        path.write_text(json.dumps(payload))
    if broken in ("table", "both"):
        _rewrite(root, "sample_annotation", lambda annotations: [_dangling_prev(a) for a in annotations])
    with pytest.raises(InputError) as in_turn:
        _load_both_in_turn(root, path, config)
    with pytest.raises(InputError) as at_once:
        load_ground_truth_and_predictions(root, VERSION, SPLIT, path, config)
    assert str(at_once.value) == str(in_turn.value)
    assert ("sample_annotation" in str(at_once.value)) == (broken in ("table", "both"))


# ----------------------------------------------------------------------------------------------
# Results files scanned in pieces (cut between groups)

RESULT_PIECE_FIELDS = {"sample_token": 0, "translation": 3, "detection_name": 0, "detection_score": 1}


def _results_bytes(groups: dict[str, list[dict]], before: str = '"meta": {"m": [{"x": 1}], "k": 2}', after: str = "") -> bytes:
    body = json.dumps(groups)
    parts = [p for p in (before, f'"results": {body}', after) if p]
    return ("{" + ", ".join(parts) + "}").encode()


def _result_groups(rng: np.random.Generator, n_groups: int) -> dict[str, list[dict]]:
    groups = {}
    for g in range(n_groups):
        token = f"s{g:03d}"
        groups[token] = [
            {"sample_token": token, "translation": rng.normal(size=3).tolist(), "detection_name": "car",
             "detection_score": float(rng.random())}
            for _ in range(int(rng.integers(0, 4)))
        ]  # fmt: skip
    return groups


def _scan_results_in_parts(data: bytes, parts: int) -> jsonscan.ScannedRecords | None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as pool:
        return jsonscan.start_results_scan(data, RESULT_PIECE_FIELDS, pool, parts, min_part_bytes=1).result()


def _assert_same_results_scan(a, b) -> None:
    assert (a is None) == (b is None)
    if a is not None:
        _assert_same_scan(a, b)
        assert np.array_equal(a.group_keys(), b.group_keys())
        assert np.array_equal(a.strings("detection_name"), b.strings("detection_name"))


@pytest.mark.parametrize("parts", [2, 3, 7, 64])
@pytest.mark.parametrize("meta", ["before", "after", "none"])
def test_a_results_scan_in_parts_equals_one_pass(parts: int, meta: str) -> None:
    groups = _result_groups(np.random.default_rng(21), 60)  # empty groups among them
    extra = '"other": [1, 2], "meta": {"v": [3]}' if meta == "after" else '"other": 3'
    data = _results_bytes(groups, before='"meta": {"m": 1}' if meta == "before" else "", after=extra)
    ranges = jsonscan.results_parts(data, parts, min_part_bytes=1)
    assert len(ranges) > 1 and ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(data[end - 1 : end] == b"]" and data[begin : begin + 1] == b'"' for (_, end), (begin, _) in zip(ranges, ranges[1:]))
    # Every piece is read on its own, none falls back (the merge is what is compared).
    for j, (begin, end) in enumerate(ranges):
        piece = jsonscan._scan_part(data, begin, end, j > 0, j < len(ranges) - 1, jsonscan.RESULTS, RESULT_PIECE_FIELDS, None)
        assert piece is not None, j
    in_parts = _scan_results_in_parts(data, parts)
    one = jsonscan.scan_records(data, jsonscan.RESULTS, RESULT_PIECE_FIELDS)
    assert one is not None and len(one) == sum(len(boxes) for boxes in groups.values())
    _assert_same_results_scan(in_parts, one)
    assert jsonscan.decode_strings(in_parts.group_keys()) == list(groups)
    if meta != "none":
        assert json.loads(data[slice(*in_parts.meta_range)]) == ({"m": 1} if meta == "before" else {"v": [3]})


@pytest.mark.parametrize(
    "case",
    [
        "look-alike in a string",  # }], " inside a detection name
        "look-alike in a nested value",  # a record field holding [{...}], then another field
        "look-alike in meta before the results",
        "look-alike in a key after the results",
    ],
)
def test_a_results_cut_in_the_wrong_place_fails_its_piece_and_falls_back(case: str) -> None:
    rng = np.random.default_rng(4)
    groups = _result_groups(rng, 4)
    record = {"sample_token": "s001", "translation": [1.0, 2.0, 3.0], "detection_name": "car", "detection_score": 0.5}
    before, after = '"meta": {"m": 1}', ""
    if case == "look-alike in a string":
        record["detection_name"] = "x" * 30 + "}], "  # its closing quote completes the look-alike
    elif case == "look-alike in a nested value":
        record["nested"] = [{"a": 1}] * 3 + [{"b": "z" * 40}]
        record["more"] = 1
    elif case == "look-alike in meta before the results":
        before = '"meta": {"m": [{"a": "' + "q" * 60 + '"}], "n": 1}'
    else:
        after = '"later": {"m": [{"a": "' + "q" * 60 + '"}], "n": 1}'
    groups["s001"] = [record]
    data = _results_bytes(groups, before=before, after=after)
    marker = next(data.find(m) for m in (b"x" * 30, b"nested", b"q" * 60) if m in data)
    look_alike = data.find(b"}]", marker)
    match = jsonscan._GROUP_BOUNDARY.search(data, look_alike - 1)
    assert match is not None and match.start() == look_alike  # the cut lands on the look-alike
    end, begin = match.end(1), match.start(2)
    first = jsonscan._scan_part(data, 0, end, False, True, jsonscan.RESULTS, RESULT_PIECE_FIELDS, None)
    assert first is None  # the piece before a wrong cut does not end after a group of "results"
    one = jsonscan.scan_records(data, jsonscan.RESULTS, RESULT_PIECE_FIELDS)
    assert one is not None
    for parts in (2, 3, 5):
        _assert_same_results_scan(_scan_results_in_parts(data, parts), one)


@pytest.mark.parametrize("twice", ["meta", "results"])
def test_a_key_seen_twice_across_pieces_is_left_to_the_one_pass(twice: str) -> None:
    groups = _result_groups(np.random.default_rng(6), 30)
    after = '"meta": {"again": 1}' if twice == "meta" else '"results": {}'
    data = _results_bytes(groups, before='"meta": {"m": 1}', after=after)
    assert jsonscan.scan_records(data, jsonscan.RESULTS, RESULT_PIECE_FIELDS) is None  # json's to decide
    assert len(jsonscan.results_parts(data, 4, min_part_bytes=1)) == 4
    assert _scan_results_in_parts(data, 4) is None


def test_a_results_piece_that_is_not_json_refuses_the_document() -> None:
    groups = _result_groups(np.random.default_rng(7), 40)
    data = bytearray(_results_bytes(groups))
    begin, end = jsonscan.results_parts(bytes(data), 4, min_part_bytes=1)[2]
    data[end - 2 : end - 2] = b",,"  # inside the third piece
    assert jsonscan.scan_records(bytes(data), jsonscan.RESULTS, RESULT_PIECE_FIELDS) is None
    assert _scan_results_in_parts(bytes(data), 4) is None


def test_loading_both_at_once_with_the_results_in_pieces(minimal_log, predictions_for, tmp_path, monkeypatch):
    from avfusion.eval import fastload
    from avfusion.eval.data import load_ground_truth_and_predictions

    started = []

    def small_pieces(data, pool):
        pending = jsonscan.start_results_scan(data, fastload.RESULT_FIELDS, pool, 5, min_part_bytes=1)
        started.append(len(pending._futures))
        return pending

    monkeypatch.setattr(fastload, "start_results_scan", small_pieces)
    config = default_config()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(predictions_for(minimal_log, seed=14)))
    ground_truth, predictions = load_ground_truth_and_predictions(minimal_log, VERSION, SPLIT, path, config)
    expected_truth, expected = _load_both_in_turn(minimal_log, path, config)
    assert started and started[0] > 1
    _assert_same_arrays(predictions.boxes, expected.boxes)
    assert predictions.meta == expected.meta and len(predictions.boxes) > 0


@pytest.mark.parametrize("layout", ["table", "filtered table", "results"])
def test_more_records_than_the_first_bytes_promise(layout: str) -> None:
    """Room for records is estimated from a piece's first 64 kB; big records there and small ones
    after run out of it, and the scan starts again with room for all."""
    big = [{"t": "x" * 3000, "v": [1.5]} for _ in range(30)]
    small = [{"t": f"y{i}", "v": [float(i)]} for i in range(20000)]
    n_records = len(big + small)
    if layout == "table":
        data = json.dumps(big + small).encode()
        scanned = jsonscan.scan_records(data, jsonscan.TABLE, {"t": 0, "v": 1})
        expected_tokens = [r["t"] for r in big + small]
    elif layout == "filtered table":  # skipped records take room too, while they are read
        data = json.dumps(big + small).encode()
        kept = [r for r in big + small if r["t"] == "x" * 3000 or r["t"].endswith("7")]
        keep = jsonscan.RecordFilter("t", sorted({r["t"] for r in kept}))
        scanned = jsonscan.scan_records(data, jsonscan.TABLE, {"t": 0, "v": 1}, keep)
        assert scanned is not None and len(scanned.skipped) == len(big + small) - len(kept)
        big, small = [], kept
        expected_tokens = [r["t"] for r in kept]
    else:
        groups = {f"g{i}": [record] for i, record in enumerate(big + small)}
        data = json.dumps({"meta": {}, "results": groups}).encode()
        scanned = jsonscan.scan_records(data, jsonscan.RESULTS, {"t": 0, "v": 1})
        expected_tokens = [r["t"] for r in big + small]
        assert jsonscan.decode_strings(scanned.group_keys()) == list(groups)
    assert jsonscan._estimated_count(np.frombuffer(data, np.uint8), 0, len(data), ord("{")) < n_records
    assert scanned is not None and jsonscan.decode_strings(scanned.strings("t")) == expected_tokens
    assert scanned.number_slots("v")[:, 0].tolist() == [r["v"][0] for r in big + small]


def test_strings_copied_near_the_end_of_the_buffer() -> None:
    """The copies are read a word at a time, except where a word would cross the buffer's end."""
    for length in range(0, 34):
        for tail in ("", " ", "        ", "\n" * 9):
            text = "".join("abcdefghij"[i % 10] for i in range(length))
            data = ('[{"n": 1, "s": "%s"}]%s' % (text, tail)).encode()
            scanned = jsonscan.scan_records(data, jsonscan.TABLE, {"n": 1, "s": 0})
            assert scanned is not None
            assert jsonscan.decode_strings(scanned.strings("s")) == [text], (length, tail)
            k = scanned.column("s")
            gathered = jsonscan.string_matrix(data, scanned.string_start[:, k], scanned.string_end[:, k])
            assert np.array_equal(scanned.strings("s"), gathered)
