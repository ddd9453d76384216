"""The fast loading path (`fastload`, msgspec) against `json` and the reference loaders.

Numbers must be bit-identical to what `json` reads; tables and results files must give the
reference path's arrays exactly (unicode, escapes, extra and repeated fields included); and
whatever the fast path does not read exactly as `json` does must go to the reference path, so that
bad input keeps its clear error messages.
"""

from __future__ import annotations

import copy
import json
import math
import os
from decimal import Decimal, getcontext
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from avfusion.errors import InputError
from avfusion.eval import data as eval_data
from avfusion.eval import fastload
from avfusion.eval.config import default_config
from avfusion.eval.data import (
    _split_samples,
    load_ground_truth,
    load_ground_truth_and_predictions,
    load_ground_truth_reference,
    load_predictions,
    load_predictions_reference,
)
from avfusion.eval.fastload import (
    EgoPose,
    annotation_split_rows,
    ground_truth_fast,
    lidar_ego_translations,
    results_columns_fast,
)
from avfusion.eval.submission import validate_results

VERSION = "v1.0-mini"
SPLIT = "synth_val"


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, np.float64).view(np.uint64)


# ----------------------------------------------------------------------------------------------
# Numbers


def _number_texts(rng: np.random.Generator) -> list[str]:
    """Numbers in every JSON form: as writers print them, integers of every size, exponents of
    both signs and cases, and the hard cases of decimal -> binary conversion."""
    magnitudes = 10.0 ** rng.uniform(-30, 30, 2000)
    values = rng.choice([-1.0, 1.0], 2000) * magnitudes * rng.random(2000)
    texts = [repr(float(v)) for v in values]  # shortest round trip: up to 17 digits
    texts += [repr(float(v)) for v in rng.normal(0, 100, 1000)]
    texts += [f"{v:.{p}e}" for v, p in zip(values[:500], rng.integers(0, 20, 500), strict=True)]
    texts += [f"{v:.{p}f}" for v, p in zip(rng.normal(0, 50, 500), rng.integers(0, 22, 500), strict=True)]
    texts += [str(int(i)) for i in rng.integers(-(2**62), 2**62, 300)]
    texts += [
        "0",
        "-0",
        "0.0",
        "-0.0",
        "0e0",
        "-0E-5",
        "1E+5",
        "1e22",
        "1e23",
        "9007199254740993",
        "9007199254740992.5",
        "123456789012345678",
        "1234567890123456789",
        "12345678901234567890123",
        "0.1",
        "0.3",
        "2.2250738585072014e-308",
        "4.9e-324",
        "1e-400",
        "1.7976931348623157e308",
        "0.000000000000000000000000000001",
        "100000000000000000000000000000.5",
        "9.999999999999999e22",
        "8.98846567431158e307",
        "0.30000000000000004",
        "1.00000000000000011102230246251565",
        "3.141592653589793238462643383279",
        "5e-324",
        "2.4703282292062327e-324",
        "2.4703282292062328e-324",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "1" + "0" * 300,
    ]
    # Runs of digits of every length, in the integer part, after leading zeros and before exponents.
    for length in range(1, 41):
        digits = "".join(rng.choice(list("0123456789"), length))
        whole = digits.lstrip("0") or "0"
        zeros = "0" * int(rng.integers(0, 12))
        texts += [whole, f"-{whole}", f"{int(rng.integers(0, 1000))}.{zeros}{digits}", f"0.{zeros}{digits}"]
        texts += [f"{whole}e-{int(rng.integers(0, 30))}", f"{whole[:1]}.{digits}E+{int(rng.integers(0, 30))}"]
    # Exact ties between adjacent doubles (round half to even) and decimals next to a midpoint.
    texts += [str(int(i) | 1) for i in rng.integers(2**53, 2**54, 200)]
    texts += [f"{int(i)}.5" for i in rng.integers(2**52, 2**53, 200)]
    texts += [f"{m}e{q}" for m, q in _near_ties(rng, 300)]
    return texts


def _near_ties(rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
    """(mantissa, scale) of 18-digit decimals just below, on and just above the midpoint of two
    adjacent doubles."""
    getcontext().prec = 60
    cases = []
    for value in 10.0 ** rng.uniform(-200, 200, count):
        midpoint = (Decimal(float(value)) + Decimal(math.nextafter(float(value), math.inf))) / 2
        _, digits, exponent = midpoint.normalize().as_tuple()
        digit_string = "".join(map(str, digits))
        head, scale = int(digit_string[:18]), exponent + max(0, len(digit_string) - 18)
        cases += [(head - 1, scale), (head, scale), (head + 1, scale)]
    return cases


def _write_table(root: Path, name: str, text: str | bytes) -> None:
    (root / VERSION).mkdir(parents=True, exist_ok=True)
    path = root / VERSION / f"{name}.json"
    path.write_bytes(text.encode() if isinstance(text, str) else text)


def test_numbers_are_bit_identical_to_what_json_reads(tmp_path):
    texts = _number_texts(np.random.default_rng(0))
    records = ",".join(f'{{"token": "p{i}", "translation": [{t}, 1, {t}]}}' for i, t in enumerate(texts))
    _write_table(tmp_path, "ego_pose", f"[{records}]")
    poses = fastload.read_table(tmp_path, VERSION, EgoPose, "ego_pose")
    assert poses is not None and len(poses) == len(texts)
    expected = np.array([float(json.loads(t)) for t in texts])  # "-0" is the int 0 to json
    decoded = np.array([pose.translation for pose in poses])
    assert np.array_equal(_bits(decoded[:, 0]), _bits(expected))
    assert np.array_equal(_bits(decoded[:, 2]), _bits(expected))
    assert np.all(decoded[:, 1] == 1.0)
    assert math.copysign(1.0, decoded[texts.index("-0.0"), 0]) == -1.0
    assert math.copysign(1.0, decoded[texts.index("-0"), 0]) == 1.0


@pytest.mark.parametrize("text", ["1e400", "-1e400", "1" + "0" * 400, "NaN", "Infinity", "-Infinity"])
def test_numbers_beyond_the_float_range_are_left_to_json(tmp_path, text):
    """`json` reads these (as inf, a huge int or NaN); the fast path steps aside."""
    _write_table(tmp_path, "ego_pose", f'[{{"token": "p", "translation": [{text}, 1, 2]}}]')
    assert json.loads((tmp_path / VERSION / "ego_pose.json").read_bytes())[0]["translation"][1] == 1
    assert fastload.read_table(tmp_path, VERSION, EgoPose, "ego_pose") is None


def test_numbers_in_results_files_are_bit_identical_to_what_json_reads():
    """The same texts as the translations and velocities of a results file, through the whole fast
    path: its columns are `validate_results`' columns of `json.loads`, bit for bit."""
    texts = [t for t in _number_texts(np.random.default_rng(1)) if abs(float(t)) < 1e300]
    boxes = [
        f'{{"sample_token": "s{i % 7}", "translation": [{t}, -0, 1E2], "size": [1, 2.5, 3e0], '
        f'"rotation": [1, 0, 0, 0.0], "velocity": [{t}, 0], "detection_name": "car", '
        f'"detection_score": {"0.5" if i % 2 else "1"}, "attribute_name": ""}}'
        for i, t in enumerate(texts)
    ]
    groups = {f"s{g}": [b for i, b in enumerate(boxes) if i % 7 == g] for g in range(7)}
    body = ", ".join(f'"{k}": [{", ".join(v)}]' for k, v in groups.items())
    data = ('{"meta": {}, "results": {' + body + "}}").encode()
    tokens = list(groups)
    fast = results_columns_fast(data, tokens, max_boxes_per_sample=10_000)
    assert fast is not None
    reference = validate_results(json.loads(data), tokens, max_boxes_per_sample=10_000)
    _assert_same_arrays(fast[0], reference)


# ----------------------------------------------------------------------------------------------
# What json reads differently is left to it


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"[",
        b"[{]",
        b'[{"token": "a", "name": "b",}]',
        b'[{"token": "a", "name": "b"}],',
        b'[{"token" "a", "name": "b"}]',
        b'[{"token": "a", "name": "b", "x": 01}]',
        b'[{"token": "a", "name": "b", "x": 1.}]',
        b'[{"token": "a", "name": "b", "x": -}]',
        b'[{"token": "a", "name": "b", "x": .5}]',
        b'[{"token": "a", "name": "b", "x": 1e}]',
        b'[{"token": "a", "name": "b", "x": "\\q"}]',
        b'[{"token": "a", "name": "b", "x": "a\nb"}]',
        b'[{"token": "a", "name": "b", "x": tru}]',
        b'[{"token": "a", "name": "b", "x": NaN}]',
        b'[{"token": "a", "name": "b", "x": "\xff"}]',
        b'[{"token": "a", "name": "b", "\xff": 1}]',
        b'[{"token": "a", "name": "b", "x": "\\ud800"}]',
        b'\xef\xbb\xbf[{"token": "a", "name": "b"}]',
        b'[{"token": "a", "name": "b"}] x',
        b'[{"token": "a", "name": "b", "x": "\\u12"}]',
        b'[{"token": "a"}]',
        b'[{"token": "a", "name": 3}]',
        b'[{"token": "a", "name": null}]',
        b'{"token": "a", "name": "b"}',
        b"[1, 2]",
        '[{"token": "a", "name": "b"}]'.encode("utf-16"),
    ],
)
def test_anything_json_may_read_differently_is_left_to_it(tmp_path, document):
    """Malformed JSON, bad bytes in skipped fields, what only `json` accepts (NaN, lone
    surrogates, a BOM, UTF-16), missing or mistyped fields: the fast path gives None."""
    _write_table(tmp_path, "category", document)
    assert fastload.read_table(tmp_path, VERSION, fastload.Category, "category") is None


def test_unicode_escapes_and_extra_fields_read_as_json_reads_them(tmp_path):
    names = [
        "plain",
        "caf\u00e9",
        "\u65e5\u672c",
        "emoji \U0001f600",
        'quote " and \\ backslash',
        "tab\tnew\nline",
        "\u0000nul",
        "",
    ]
    records = [
        {
            "description": {"nested": [1, {"deep": [None, True, False, 1e300, -0.0, "\u00e9"]}]},
            "token": f"t{i}",
            "name": name,
            "z": [],
        }
        for i, name in enumerate(names)
    ]
    for ensure_ascii in (True, False):
        text = json.dumps(records, ensure_ascii=ensure_ascii, indent=2 if ensure_ascii else None)
        # Repeated fields: the last one counts, for both.
        text = text.replace('"token": "t0"', '"token": "first", "name": "overwritten", "token": "t0"')
        _write_table(tmp_path, "category", text)
        decoded = fastload.read_table(tmp_path, VERSION, fastload.Category, "category")
        expected = json.loads((tmp_path / VERSION / "category.json").read_bytes())
        assert decoded is not None
        assert [(c.token, c.name) for c in decoded] == [(c["token"], c["name"]) for c in expected]
        assert decoded[0].name == "plain" and decoded[3].name == "emoji \U0001f600"


def test_random_corruptions_are_either_refused_or_read_as_json_reads_them():
    """Bytes of a valid results file changed at random: whenever the fast path answers, the answer
    is the reference path's (which must then accept the file too)."""
    rng = np.random.default_rng(3)
    tokens = [f"s{i}" for i in range(4)]
    results = {
        token: [
            {
                "sample_token": token,
                "translation": rng.normal(size=3).tolist(),
                "size": [1.0, 2.0, 1.5],
                "rotation": [1.0, 0.0, 0.0, 0.0],
                "velocity": rng.normal(size=2).tolist(),
                "detection_name": "car",
                "detection_score": float(rng.random()),
                "attribute_name": "",
                "num_pts": int(rng.integers(100)),
            }
            for _ in range(3)
        ]
        for token in tokens
    }
    original = json.dumps({"meta": {"use_lidar": True}, "results": results}).encode()
    alphabet = np.frombuffer(b'{}[],:"\\ -.eE+0123456789truefalsnul\n\xc3\xa9\xff', np.uint8)
    accepted = 0
    for _ in range(1000):
        mutated = bytearray(original)
        for position in rng.integers(0, len(mutated), rng.integers(1, 4)):
            mutated[position] = int(rng.choice(alphabet))
        fast = results_columns_fast(bytes(mutated), tokens, 500)
        if fast is None:
            continue
        accepted += 1
        payload = json.loads(bytes(mutated))  # must not raise: the fast path accepted it
        reference = validate_results(payload, tokens, max_boxes_per_sample=500)
        _assert_same_arrays(fast[0], reference)
        assert fast[1] == payload["meta"]
    assert accepted > 30  # digit changes and the like keep the file valid


# ----------------------------------------------------------------------------------------------
# Ground truth and predictions against the reference loaders


def _assert_same_arrays(a, b) -> None:
    for name in a.__slots__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), name
        else:
            assert x == y, name


def _assert_fast_equals_reference(root, split: str = SPLIT, fast_taken: bool = True) -> None:
    samples = _split_samples(root, VERSION, split)
    fast = ground_truth_fast(root, VERSION, split, samples)
    assert (fast is not None) == fast_taken
    # As a helper process would give them: the split's rows found apart from the records.
    split_rows = partial(annotation_split_rows, root, VERSION, samples.position_of_sample)
    helped = ground_truth_fast(
        root, VERSION, split, samples, split_rows, partial(lidar_ego_translations, root, VERSION, samples)
    )
    assert (helped is not None) == fast_taken
    loaded = load_ground_truth(root, VERSION, split)
    reference = load_ground_truth_reference(root, VERSION, split)
    for truth in (loaded, fast, helped) if fast is not None else (loaded,):
        _assert_same_arrays(truth.boxes, reference.boxes)
        _assert_same_arrays(truth.bike_racks, reference.bike_racks)
        assert np.array_equal(truth.ego_translation.view(np.uint64), reference.ego_translation.view(np.uint64))
        assert truth.predefined_split == reference.predefined_split


def test_fast_ground_truth_equals_the_reference_loader(minimal_log):
    for split in (SPLIT, "synth_train"):
        _assert_fast_equals_reference(minimal_log, split)
        rows = annotation_split_rows(
            minimal_log, VERSION, _split_samples(minimal_log, VERSION, split).position_of_sample
        )
        assert rows is not None and rows.tokens_unique and len(rows.rows)
    reference = load_ground_truth_reference(minimal_log, VERSION, SPLIT)
    assert len(reference.bike_racks.sample_index) and np.isnan(reference.boxes.velocity_xy).any()
    assert (reference.boxes.attribute >= 0).any() and (reference.boxes.attribute == -1).any()


def _rewrite(root, table: str, change, **dump_options) -> None:
    path = root / VERSION / f"{table}.json"
    records = json.loads(path.read_text())
    changed = change(records)
    path.write_text(json.dumps(records if changed is None else changed, **dump_options))


def _unicode_tokens(root) -> None:
    """Every token of the log replaced by one with non-ASCII characters and characters JSON escapes."""
    mapping: dict[str, str] = {}

    def convert(value):
        if isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value):
            return mapping.setdefault(value, f'\u00e9\U0001f600"\\\t/{value[:8]}\u65e5{len(mapping)}')
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    for path in sorted((root / VERSION).glob("*.json")):
        if path.name != "splits.json":
            ensure_ascii = path.name != "sample_annotation.json"  # escaped in some tables, raw UTF-8 in others
            path.write_text(
                json.dumps(convert(json.loads(path.read_text())), ensure_ascii=ensure_ascii), encoding="utf-8"
            )


@pytest.mark.parametrize(
    "change",
    [
        "unicode tokens",
        "extra fields",
        "repeated fields",
        "duplicate tokens",
        "annotation token repeated",
        "indented",
        "integers as numbers",
        "float timestamps",
        "track crosses the split",
    ],
)
def test_well_formed_variations_take_the_fast_path_and_equal_the_reference(write_log, tmp_path, change):
    root = write_log(tmp_path / "log", seed=5, scenes=3, samples_per_scene=4)
    if change == "unicode tokens":
        _unicode_tokens(root)
    elif change == "extra fields":
        _rewrite(
            root,
            "sample_annotation",
            lambda anns: [{"extra": {"x": [1, None, "\u00e9"]}, **a, "zz": -1e300} for a in anns],
        )
        _rewrite(root, "sample_data", lambda records: [{**r, "more": [[], {}]} for r in records])
    elif change == "repeated fields":
        path = root / VERSION / "sample_annotation.json"
        text = path.read_text().replace('"num_lidar_pts": ', '"num_lidar_pts": 123456, "num_lidar_pts": ')
        path.write_text(text.replace('"translation": [', '"translation": [0, 0, 0], "translation": ['))
    elif change == "duplicate tokens":
        # An instance listed twice (the last counts) and an ego pose repeated with another centre.
        _rewrite(
            root,
            "instance",
            lambda instances: [*instances, {**instances[0], "category_token": instances[-1]["category_token"]}],
        )
        _rewrite(root, "ego_pose", lambda poses: [*poses, *[{**p, "translation": [1.0, 2.0, 3.0]} for p in poses[::5]]])
    elif change == "annotation token repeated":
        # A split record's token listed again, later, outside the split: its neighbours' velocities
        # take the later record (the reference path's dict of every token keeps the last row).
        other = _other_split_samples(root)

        def repeat_one(annotations):
            named = next(a for a in annotations if a["sample_token"] not in other and a["prev"] and a["next"])
            sample = next(a["sample_token"] for a in annotations if a["sample_token"] in other)
            return [*annotations, {**named, "sample_token": sample, "translation": [5.0, 6.0, 7.0]}]

        _rewrite(root, "sample_annotation", repeat_one)
        rows = annotation_split_rows(root, VERSION, _split_samples(root, VERSION, SPLIT).position_of_sample)
        assert rows is not None and not rows.tokens_unique
    elif change == "indented":
        for table in ("sample_annotation", "sample_data", "ego_pose"):
            _rewrite(root, table, lambda records: None, indent="\t", separators=(" ,", " : "))
    elif change == "float timestamps":  # as in Lyft's logs
        _rewrite(
            root, "sample", lambda samples: [{**sample, "timestamp": sample["timestamp"] + 0.25} for sample in samples]
        )
    elif change == "integers as numbers":
        _rewrite(
            root,
            "sample_annotation",
            lambda anns: [{**a, "translation": [round(x) for x in a["translation"]]} for a in anns],
        )
    else:
        other = _other_split_samples(root)

        def link(annotations):
            # The first annotation of a split track continues one that ends outside the split.
            ending = next(a for a in annotations if a["sample_token"] in other and not a["next"])
            starting = next(a for a in annotations if a["sample_token"] not in other and not a["prev"] and a["next"])
            ending["next"], starting["prev"] = starting["token"], ending["token"]

        _rewrite(root, "sample_annotation", link)
    _assert_fast_equals_reference(root)


def _other_split_samples(root) -> set[str]:
    """The sample tokens of the log that are not in SPLIT."""
    version_dir = root / VERSION
    in_split = set(json.loads((version_dir / "splits.json").read_text())[SPLIT])
    scene_name = {s["token"]: s["name"] for s in json.loads((version_dir / "scene.json").read_text())}
    return {
        s["token"]
        for s in json.loads((version_dir / "sample.json").read_text())
        if scene_name[s["scene_token"]] not in in_split
    }


def _outside(other, change):
    def apply(records):
        for record in records:
            if record.get("sample_token") in other:
                change(record)

    return apply


@pytest.mark.parametrize(
    ("table", "breakage"),
    [
        (
            "sample_annotation",
            lambda other: _outside(other, lambda a: a.__setitem__("translation", [1, 2, float("nan")])),
        ),
        ("sample_annotation", lambda other: _outside(other, lambda a: a.__setitem__("token", 17))),
        ("sample_data", lambda other: _outside(other, lambda d: d.__setitem__("is_key_frame", 1))),
        ("sample_data", lambda other: _outside(other, lambda d: d.__setitem__("calibrated_sensor_token", None))),
        ("ego_pose", lambda other: lambda poses: poses[-1].__setitem__("translation", "here")),
        ("sample", lambda other: lambda samples: samples[-1].__setitem__("timestamp", "1600000000000000")),
    ],
)
def test_odd_records_the_reference_path_ignores_send_the_fast_path_there(write_log, tmp_path, table, breakage):
    """The reference path does not read most fields of the records of other samples, so it gives a
    ground truth; the fast path, whose decoder checks more of them, leaves such a log to it."""
    root = write_log(tmp_path / "log", seed=6, scenes=3, samples_per_scene=4)
    _rewrite(root, table, breakage(_other_split_samples(root)))
    _assert_fast_equals_reference(root, fast_taken=False)


@pytest.mark.parametrize(
    "change",
    [
        lambda a: a.__setitem__("translation", ["x", {}]),
        lambda a: a.__setitem__("size", [1.0]),
        lambda a: a.__setitem__("rotation", None),
        lambda a: a.pop("instance_token"),
        lambda a: a.__setitem__("num_lidar_pts", 1.5),
        lambda a: a.__setitem__("attribute_tokens", ["a", "b"]),
    ],
)
def test_fields_outside_the_split_are_not_read_by_either_path(write_log, tmp_path, change):
    root = write_log(tmp_path / "log", seed=6, scenes=3, samples_per_scene=4)
    _rewrite(root, "sample_annotation", _outside(_other_split_samples(root), change))
    _assert_fast_equals_reference(root)


def _dangling_prev(annotation):
    annotation["prev"] = "no-such-annotation"


def _short_translation(annotation):
    annotation["translation"] = [1.0, 2.0]


def _two_attributes(annotation):
    annotation["attribute_tokens"] = annotation["attribute_tokens"] * 2 or ["x", "y"]


def _unknown_instance(annotation):
    annotation["instance_token"] = "no-such-instance"


def _unknown_attribute(annotation):
    annotation["attribute_tokens"] = ["no-such-attribute"]


@pytest.mark.parametrize(
    "breakage", [_dangling_prev, _short_translation, _two_attributes, _unknown_instance, _unknown_attribute]
)
def test_a_broken_table_gets_the_reference_error(write_log, tmp_path, breakage):
    root = write_log(tmp_path / "log", seed=4, scenes=3, samples_per_scene=3)
    _rewrite(root, "sample_annotation", lambda annotations: [breakage(a) or a for a in annotations])
    assert ground_truth_fast(root, VERSION, SPLIT, _split_samples(root, VERSION, SPLIT)) is None
    with pytest.raises(InputError) as fast_error:
        load_ground_truth(root, VERSION, SPLIT)
    with pytest.raises(InputError) as reference_error:
        load_ground_truth_reference(root, VERSION, SPLIT)
    assert str(fast_error.value) == str(reference_error.value)


def _break_a_rack_size(root):
    racks = {
        i["token"]
        for i in json.loads((root / VERSION / "instance.json").read_text())
        if i["category_token"]
        == next(
            c["token"]
            for c in json.loads((root / VERSION / "category.json").read_text())
            if c["name"] == "static_object.bicycle_rack"
        )
    }
    _rewrite(
        root,
        "sample_annotation",
        lambda anns: [{**a, "size": [1.0, 2.0]} if a["instance_token"] in racks else a for a in anns],
    )


def _break_a_neighbour_outside_the_split(root):
    other = _other_split_samples(root)

    def link(annotations):
        ending = next(a for a in annotations if a["sample_token"] in other and not a["next"])
        starting = next(a for a in annotations if a["sample_token"] not in other and not a["prev"] and a["next"])
        ending["next"], starting["prev"] = starting["token"], ending["token"]
        ending["translation"] = [1.0, "x", 2.0]

    _rewrite(root, "sample_annotation", link)


@pytest.mark.parametrize("breakage", [_break_a_rack_size, _break_a_neighbour_outside_the_split])
def test_a_bad_vector_the_metric_reads_gets_the_reference_error(write_log, tmp_path, breakage):
    root = write_log(tmp_path / "log", seed=5, scenes=3, samples_per_scene=4)
    breakage(root)
    assert ground_truth_fast(root, VERSION, SPLIT, _split_samples(root, VERSION, SPLIT)) is None
    with pytest.raises(InputError) as fast_error:
        load_ground_truth(root, VERSION, SPLIT)
    with pytest.raises(InputError) as reference_error:
        load_ground_truth_reference(root, VERSION, SPLIT)
    assert str(fast_error.value) == str(reference_error.value)


LYFT_TABLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata" / "nuscenes_fixture"
LYFT_TABLES = LYFT_TABLES / "mmdetection3d" / "tests" / "data" / "lyft" / "v1.01-train" / "v1.01-train"


@pytest.mark.skipif(not LYFT_TABLES.is_dir(), reason=f"real Lyft tables not found at {LYFT_TABLES}")
def test_real_lyft_tables_read_as_the_reference_path_reads_them(tmp_path):
    """Tables written by a real dataset's tools (nuScenes schema; copied to tmp_path to add a split)."""
    version = "v1.01-train"
    (tmp_path / version).mkdir()
    for table in LYFT_TABLES.glob("*.json"):
        (tmp_path / version / table.name).write_bytes(table.read_bytes())
    scenes = [scene["name"] for scene in json.loads((LYFT_TABLES / "scene.json").read_text())]
    (tmp_path / version / "splits.json").write_text(json.dumps({"lyft_all": scenes}))
    samples = _split_samples(tmp_path, version, "lyft_all")
    fast = ground_truth_fast(tmp_path, version, "lyft_all", samples)
    try:
        reference = load_ground_truth_reference(tmp_path, version, "lyft_all")
    except InputError as error:  # e.g. a track whose other annotations the fixture does not hold
        assert fast is None
        with pytest.raises(InputError) as fast_error:
            load_ground_truth(tmp_path, version, "lyft_all")
        assert str(fast_error.value) == str(error)
        return
    assert fast is not None
    _assert_same_arrays(fast.boxes, reference.boxes)
    _assert_same_arrays(fast.bike_racks, reference.bike_racks)
    assert np.array_equal(fast.ego_translation, reference.ego_translation) and len(fast.ego_translation) == 1


def test_fast_predictions_equal_the_reference_loader(minimal_log, predictions_for, tmp_path):
    config = default_config()
    ground_truth = load_ground_truth(minimal_log, VERSION, SPLIT)
    payload = predictions_for(minimal_log, seed=11)
    first = next(token for token, boxes in payload["results"].items() if boxes)
    payload["results"][first][0]["num_pts"] = 0  # the devkit drops it; so must we
    payload["results"][first][1]["ego_translation"] = [1.0, 2.0, 3.0]
    payload["results"][first][1]["note"] = {"caf\u00e9": [None, 1e300]}
    payload["meta"]["comment"] = "r\u00e9sultats \U0001f600"
    path = tmp_path / "results.json"
    for ensure_ascii in (True, False):
        path.write_text(json.dumps(payload, indent=1, ensure_ascii=ensure_ascii), encoding="utf-8")
        # An unknown field holding arrays makes the array count differ from a plain file's, so the
        # fast path leaves the file to the reference path (see the repeated-key check).
        assert results_columns_fast(path.read_bytes(), ground_truth.sample_tokens, config.max_boxes_per_sample) is None
        plain = json.loads(path.read_text(encoding="utf-8"))
        plain["results"][first][1]["note"] = {"caf\u00e9": "no arrays"}
        plain_bytes = json.dumps(plain, indent=1, ensure_ascii=ensure_ascii).encode()
        assert results_columns_fast(plain_bytes, ground_truth.sample_tokens, config.max_boxes_per_sample) is not None
        fast = load_predictions(path, ground_truth, config)
        reference = load_predictions_reference(path, ground_truth, config)
        _assert_same_arrays(fast.boxes, reference.boxes)
        assert fast.meta == reference.meta and fast.meta["comment"] == "r\u00e9sultats \U0001f600"
        assert fast.boxes.num_pts.tolist().count(0) == 1


def test_a_repeated_sample_key_is_left_to_the_reference_path(minimal_log, predictions_for, tmp_path):
    """A JSON decoder keeps the last copy of a repeated key, which would drop boxes silently: the
    fast path declines such a file, and both loaders refuse it naming the sample."""
    config = default_config()
    ground_truth = load_ground_truth(minimal_log, VERSION, SPLIT)
    payload = predictions_for(minimal_log, seed=12)
    tokens = list(payload["results"])
    results_text = json.dumps(payload["results"])
    path = tmp_path / "results.json"
    for repeated_value in (payload["results"][tokens[0]][:1], []):
        repeated = json.dumps({tokens[0]: repeated_value})[1:-1]
        data = ('{"meta": {}, "results": ' + results_text[:-1] + ", " + repeated + "}}").encode()
        assert results_columns_fast(data, ground_truth.sample_tokens, config.max_boxes_per_sample) is None
        path.write_bytes(data)
        for load in (load_predictions, load_predictions_reference):
            with pytest.raises(InputError, match=f"sample {tokens[0]}: listed more than once"):
                load(path, ground_truth, config)


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

    return [
        set_box("translation", [1.0, 2.0]),
        set_box("size", [1.0, -2.0, 1.0]),
        set_box("rotation", [1.0, 1.0, 0.0, 0.0]),
        set_box("detection_name", "cat"),
        set_box("attribute_name", "vehicle.flying"),
        set_box("detection_score", True),
        set_box("detection_score", "0.5"),
        set_box("num_pts", 3.5),
        set_box("num_pts", True),
        set_box("ego_translation", [1.0, "x", 2.0]),
        set_box("ego_translation", None),
        set_box("sample_token", "elsewhere"),
        set_box("velocity", [math.nan, 0.0]),
        set_box("translation", [math.inf, 0.0, 0.0]),
        drop_box_field("size"),
        lambda p: p["results"].pop(next(iter(p["results"]))),
        lambda p: p["results"].__setitem__("not-a-sample", []),
        lambda p: p.pop("meta"),
        lambda p: p.__setitem__("meta", [1]),
        lambda p: p["results"].__setitem__(next(iter(p["results"])), {"a": 1}),
        lambda p: p["results"].__setitem__(
            next(iter(p["results"])), [{"sample_token": next(iter(p["results"]))}] * 501
        ),
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
    assert str(path) in str(fast_error.value)


def test_a_results_file_with_bad_bytes_gets_the_reference_error(minimal_log, predictions_for, tmp_path):
    config = default_config()
    ground_truth = load_ground_truth(minimal_log, VERSION, SPLIT)
    text = json.dumps({**predictions_for(minimal_log, seed=2), "note": "BAD"}).encode()
    path = tmp_path / "results.json"
    path.write_bytes(text.replace(b"BAD", b"\xff\xfe"))  # in a field neither path reads
    with pytest.raises(InputError) as fast_error:
        load_predictions(path, ground_truth, config)
    with pytest.raises(InputError) as reference_error:
        load_predictions_reference(path, ground_truth, config)
    assert str(fast_error.value) == str(reference_error.value) and "not valid JSON" in str(fast_error.value)


# ----------------------------------------------------------------------------------------------
# Ground truth and predictions loaded together


def _load_both_in_turn(root, path, config):
    ground_truth = load_ground_truth(root, VERSION, SPLIT)
    return ground_truth, load_predictions(path, ground_truth, config)


def test_loading_both_at_once_equals_loading_them_in_turn(minimal_log, predictions_for, tmp_path):
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
    config = default_config()
    root = write_log(tmp_path / "log", seed=9, scenes=3, samples_per_scene=3)
    payload = predictions_for(root, seed=3)
    if broken in ("results", "both"):
        next(boxes for boxes in payload["results"].values() if boxes)[0]["size"] = [1.0, 0.0, 1.0]
    path = tmp_path / "results.json"
    if broken != "missing results":
        path.write_text(json.dumps(payload))
    if broken in ("table", "both"):
        _rewrite(root, "sample_annotation", lambda annotations: [_dangling_prev(a) or a for a in annotations])
    with pytest.raises(InputError) as in_turn:
        _load_both_in_turn(root, path, config)
    with pytest.raises(InputError) as at_once:
        load_ground_truth_and_predictions(root, VERSION, SPLIT, path, config)
    assert str(at_once.value) == str(in_turn.value)
    assert ("sample_annotation" in str(at_once.value)) == (broken in ("table", "both"))


def _value_unless_in_a_child(parent_pid: int, value: int) -> int:
    """`value` in the process `parent_pid`; any other process (the helper) dies at once."""
    if os.getpid() != parent_pid:
        os._exit(3)
    return value


def test_a_helper_process_that_dies_or_cannot_start_leaves_the_work_to_the_caller(monkeypatch):
    with eval_data._in_helper_processes(partial(_value_unless_in_a_child, os.getpid(), 7)) as (value,):
        assert value() == 7  # computed here after the helper died
    monkeypatch.setattr(eval_data, "_HELPER_START_METHOD", "a start method this platform lacks")
    with eval_data._in_helper_processes(partial(_value_unless_in_a_child, os.getpid(), 8)) as (value,):
        assert value() == 8
