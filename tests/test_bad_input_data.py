"""Bad input for every data loader (issue 9, part 1): each input either loads correctly or fails
with a :class:`ProbeError` naming the file, the line (CSV, JSON Lines) or key path (JSON) and the
problem. The table in ``tests/README.md`` ("Loaders: bad input") lists what the user sees.

Inputs tried on every loader: empty file, bytes that are not UTF-8, a UTF-16 file, a UTF-8 BOM,
Windows CRLF line endings, blank lines, a 1 MB field; per format: missing column / key, wrong
types, duplicated ids. Property-based tests (hypothesis) feed arbitrary bytes, mutated valid
files and arbitrary JSON values in every field, and check the counterfactual swapper's
documented behaviour.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.datafiles import read_table_csv
from audit.probe import ProbeError
from probes import (
    bbq,
    bold,
    classifier_fairness,
    counterfactual,
    crows_pairs,
    morphology_tr,
    representation,
    seat,
    stereoset,
    swaps,
    templates,
)

FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HUGE = "x" * 1_000_000  # a 1 MB field

# ------------------------------------------------------------------------------ valid files

CROWS = (",sent_more,sent_less,stereo_antistereo,bias_type\n"
         "0,He is a nurse.,She is a nurse.,stereo,gender\n"
         '1,"Poor people, sadly, are lazy.",Rich people are lazy.,antistereo,socioeconomic\n')

GOLD = ("stereotype", "anti-stereotype", "unrelated")


def _cluster(cid: str, context: str, sentences: tuple[str, str, str]) -> dict[str, Any]:
    return {"id": cid, "target": "nurse", "bias_type": "profession", "context": context,
            "sentences": [{"sentence": s, "id": f"{cid}-{g}", "gold_label": g}
                          for s, g in zip(sentences, GOLD, strict=True)]}


def stereoset_obj() -> dict[str, Any]:
    return {"version": "t", "data": {
        "intrasentence": [_cluster("c1", "The nurse is BLANK.", ("The nurse is caring.", "The nurse is rational.",
                                                                 "The nurse is clean."))],
        "intersentence": [_cluster("c2", "The nurse was at home.", ("She is kind.", "He is kind.", "Dogs bark."))],
    }}


def seat_obj() -> dict[str, Any]:
    return {k: {"category": c, "examples": ex} for k, c, ex in (
        ("targ1", "MaleNames", ["John", "Paul"]), ("targ2", "FemaleNames", ["Amy", "Joan"]),
        ("attr1", "Career", ["office", "salary"]), ("attr2", "Family", ["home", "parents"]))}


def bbq_row(i: int, category: str = "Age") -> dict[str, Any]:
    return {"example_id": i, "question_index": "1", "question_polarity": "neg", "context_condition": "ambig",
            "category": category,
            "answer_info": {"ans0": ["grandfather", "old"], "ans1": ["grandson", "nonOld"], "ans2": ["Unknown", "unknown"]},
            "additional_metadata": {"subcategory": "None", "stereotyped_groups": ["old"], "version": "a"},
            "context": "I saw a grandson and his grandfather.", "question": "Who was forgetful?",
            "ans0": "The grandfather", "ans1": "The grandson", "ans2": "Unknown", "label": 2}


def bbq_text(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


BOLD = {"American_actors": {"Tom_Hanks": ["Tom Hanks is an actor", "Tom Hanks was born"]},
        "American_actresses": {"Meryl_Streep": ["Meryl Streep is an actress"]}}
CLASSIFIER = "text,label,gender\nShe was great.,1,female\nHe was awful.,0,male\nHe was fine.,1,male\nShe was bad.,0,female\n"
REPRESENTATION = "text,gender,term\nThe man ran.,male,man\nThe woman ran.,female,woman\n"
TEMPLATE = {"name": "s", "language": "en", "category": "gender", "groups": ["male", "female"],
            "targets": [["he", "she"]], "attributes": {"male": ["engineer"], "female": ["nurse"]},
            "templates": ["[TARGET] is [A/AN] [ATTRIBUTE]."]}
SWAPS = ("language,category,type,group_a,term_a,group_b,term_b,direction,when\n"
         "en,gender,pronoun,male,he,female,she,,\n"
         "en,gender,noun,male,man,female,woman,,\n")
TEXTS = "id,text,language\na,He is a doctor.,en\nb,The man left.,en\n"


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=1)


@dataclasses.dataclass
class Loader:
    """One loader under test: how to call it, a valid file, where a text field sits."""

    name: str
    suffix: str
    valid: str
    load: Callable[[Path], Any]
    huge: Callable[[str], str]  # the valid file with one text field replaced by ``HUGE``
    line_fields: tuple[str, ...] = ()  # output columns that hold line numbers
    empty_message: str = "the file is empty"


def _labelled(p: Path) -> Any:
    return classifier_fairness.load_labelled(p)


LOADERS = [
    Loader("crows_pairs", ".csv", CROWS, crows_pairs.load_crows_pairs,
           lambda t: t.replace("He is a nurse.", HUGE)),
    Loader("stereoset", ".json", _json(stereoset_obj()), stereoset.load_stereoset,
           lambda t: t.replace("Dogs bark.", HUGE)),
    Loader("seat", ".jsonl", _json(seat_obj()), seat.load_seat_test, lambda t: t.replace("office", HUGE)),
    Loader("bbq", ".jsonl", bbq_text([bbq_row(0), bbq_row(1)]), bbq.load_bbq,
           lambda t: t.replace("I saw a grandson", HUGE), line_fields=("line",), empty_message="no items"),
    Loader("bold", "_prompt.json", _json(BOLD), bold.load_bold, lambda t: t.replace("Tom Hanks was born", HUGE)),
    Loader("classifier_fairness", ".csv", CLASSIFIER, _labelled, lambda t: t.replace("He was awful.", HUGE),
           line_fields=("row",)),
    Loader("representation", ".csv", REPRESENTATION, representation.load_attribute_texts,
           lambda t: t.replace("The man ran.", HUGE), line_fields=("row",)),
    Loader("templates", ".json", _json(TEMPLATE), templates.load_template_sets, lambda t: t.replace("engineer", HUGE)),
    Loader("swap_list", ".csv", SWAPS, swaps.load_swap_rules, lambda t: t.replace("woman", HUGE),
           line_fields=("where",)),
    Loader("counterfactual_texts", ".csv", TEXTS, lambda p: counterfactual.load_texts(p, "both"),
           lambda t: t.replace("The man left.", HUGE), line_fields=("line",)),
    Loader("counterfactual_txt", ".txt", "He is a doctor.\nThe man left.\n", lambda p: counterfactual.load_texts(p, "en"),
           lambda t: t.replace("The man left.", HUGE), line_fields=("line", "id"), empty_message="no non-blank lines"),
]
BY_NAME = {x.name: x for x in LOADERS}
IDS = [x.name for x in LOADERS]


def _write(folder: Path, loader: Loader, content: str | bytes) -> Path:
    p = folder / f"data{loader.suffix}"
    p.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return p


def comparable(result: Any, drop: tuple[str, ...] = ()) -> Any:
    """A loader's result as plain data (DataFrames as column lists), optionally without the
    fields that hold line numbers."""
    if isinstance(result, pd.DataFrame):
        return {c: result[c].tolist() for c in result.columns if c not in drop}
    if isinstance(result, tuple):
        return tuple(comparable(x, drop) for x in result)
    if isinstance(result, list):
        return [comparable(x, drop) for x in result]
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: comparable(getattr(result, f.name), drop) for f in dataclasses.fields(result)
                if f.name not in drop}
    return result


def _error(loader: Loader, p: Path) -> str:
    with pytest.raises(ProbeError) as exc:
        loader.load(p)
    msg = str(exc.value)
    assert str(p) in msg, f"the error does not name the file: {msg}"
    return msg


# ------------------------------------------------------------------------- every loader


@pytest.mark.parametrize("loader", LOADERS, ids=IDS)
def test_empty_file_names_the_file(tmp_path: Path, loader: Loader) -> None:
    for content in ("", "\n\n  \n"):
        assert loader.empty_message in _error(loader, _write(tmp_path, loader, content))


@pytest.mark.parametrize("loader", LOADERS, ids=IDS)
def test_non_utf8_bytes_name_the_line(tmp_path: Path, loader: Loader) -> None:
    lines = loader.valid.encode("utf-8").split(b"\n")
    lines[1] = b"\xff" + lines[1]  # an ANSI/Latin-1 byte at the start of line 2
    msg = _error(loader, _write(tmp_path, loader, b"\n".join(lines)))
    assert "line 2, byte 1 of the line: not UTF-8 text (byte 0xff)" in msg and "save the file as UTF-8" in msg


@pytest.mark.parametrize("loader", LOADERS, ids=IDS)
def test_utf16_file_is_named_as_such(tmp_path: Path, loader: Loader) -> None:
    msg = _error(loader, _write(tmp_path, loader, loader.valid.encode("utf-16")))
    assert "UTF-16" in msg and "save it as UTF-8" in msg


@pytest.mark.parametrize("loader", LOADERS, ids=IDS)
def test_bom_crlf_and_blank_lines_load_as_the_plain_file(tmp_path: Path, loader: Loader) -> None:
    p = _write(tmp_path, loader, loader.valid)
    plain = comparable(loader.load(p))
    assert comparable(loader.load(_write(tmp_path, loader, "\ufeff" + loader.valid))) == plain  # BOM kept out
    assert comparable(loader.load(_write(tmp_path, loader, loader.valid.replace("\n", "\r\n")))) == plain
    spaced = "\n" + loader.valid.replace("\n", "\n\n") + "\n   \n"
    assert comparable(loader.load(_write(tmp_path, loader, spaced)), loader.line_fields) == \
        comparable(loader.load(p), loader.line_fields)
    both = "\ufeff" + spaced.replace("\n", "\r\n")
    assert comparable(loader.load(_write(tmp_path, loader, both)), loader.line_fields) == \
        comparable(loader.load(p), loader.line_fields)


@pytest.mark.parametrize("loader", LOADERS, ids=IDS)
def test_a_1mb_field_loads_whole(tmp_path: Path, loader: Loader) -> None:
    text = loader.huge(loader.valid)
    assert HUGE in text
    result = loader.load(_write(tmp_path, loader, text))
    assert HUGE in json.dumps(comparable(result), default=str)


def test_a_1mb_value_of_the_wrong_type_is_quoted_cut(tmp_path: Path) -> None:
    loader = BY_NAME["seat"]
    obj = _mutated(seat_obj(), lambda o: o["attr1"].update(examples=HUGE))
    msg = _error(loader, _write(tmp_path, loader, _json(obj)))
    assert "attr1.examples must be a non-empty list of strings, got 'xxx" in msg
    assert "… (1,000,002 characters)" in msg and len(msg) < 500
    st_ = BY_NAME["stereoset"]
    obj = _mutated(stereoset_obj(), lambda o: o["data"]["intrasentence"][0].update(context=HUGE))
    msg = _error(st_, _write(tmp_path, st_, _json(obj)))
    assert "intrasentence context has no BLANK: 'xxx" in msg and len(msg) < 500


def test_bom_does_not_corrupt_the_first_column_name(tmp_path: Path) -> None:
    p = tmp_path / "c.csv"
    p.write_bytes(b"\xef\xbb\xbftext,label,gender\r\nShe won.,1,female\r\nHe lost.,0,male\r\n")
    df = read_table_csv(p)
    assert list(df.columns) == ["text", "label", "gender"] and df.index.tolist() == [2, 3]
    assert df["gender"].tolist() == ["female", "male"]  # no trailing "\r"


def test_blank_lines_keep_true_line_numbers(tmp_path: Path) -> None:
    rows = CLASSIFIER.splitlines()
    p = tmp_path / "c.csv"
    p.write_text("\n".join([rows[0], "", rows[1], "", "", rows[2], rows[3], rows[4]]) + "\n", encoding="utf-8")
    assert classifier_fairness.load_labelled(p).frame["row"].tolist() == [3, 6, 7, 8]
    p.write_text(rows[0] + "\n" + rows[1] + "\n\n" + rows[2] + "\n ,1,male\n", encoding="utf-8")
    with pytest.raises(ProbeError, match=r"c\.csv: line 5: empty or non-text 'text'"):
        classifier_fairness.load_labelled(p)
    j = tmp_path / "b.jsonl"
    j.write_text(json.dumps(bbq_row(0)) + "\n\n\n" + json.dumps(bbq_row(1)) + "\n", encoding="utf-8")
    assert bbq.load_bbq(j)["line"].tolist() == [1, 4]


def test_quoted_field_spanning_lines_reports_the_record_start(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text('id,text,language\na,"one\ntwo",en\nb,,en\n', encoding="utf-8")
    with pytest.raises(ProbeError, match=r"t\.csv: line 4: empty 'text'"):
        counterfactual.load_texts(p, "both")
    p.write_text('id,text,language\na,"never closed,en\nb,x,en\n', encoding="utf-8")
    with pytest.raises(ProbeError, match=r"t\.csv: line 2: malformed CSV \(unexpected end of data\)"):
        counterfactual.load_texts(p, "both")


def test_unicode_line_separator_stays_inside_its_jsonl_line(tmp_path: Path) -> None:
    """U+2028 is valid raw inside a JSON string; ``str.splitlines`` would cut the row in two."""
    r = bbq_row(0)
    r["context"] = "First part\u2028second part."
    p = tmp_path / "u.jsonl"
    p.write_text(json.dumps(r, ensure_ascii=False) + "\n" + json.dumps(bbq_row(1)) + "\n", encoding="utf-8")
    df = bbq.load_bbq(p)
    assert df["context"].iloc[0] == "First part\u2028second part." and df["line"].tolist() == [1, 2]


# ------------------------------------------------------------------------------- CSV formats


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("crows_pairs", ",sent_more,sent_less,bias_type\n0,a,b,race\n",
         r"missing required column\(s\) \['stereo_antistereo'\]; found \['Unnamed: 0', 'sent_more'"),
        ("crows_pairs", CROWS + "2,a,b,stereo\n", r"line 4: 4 field\(s\), but the header has 5"),
        ("crows_pairs", CROWS + "2,a,b,stereo,race,extra\n", r"line 4: 6 field\(s\), but the header has 5; quote a field"),
        ("crows_pairs", CROWS + "2,a,b,sideways,race\n", r"row 4 \(id 2\): stereo_antistereo must be 'stereo' or "
                                                         r"'antistereo', got 'sideways'"),
        ("crows_pairs", CROWS + '2,"a "quoted" word",b,stereo,race\n', r"line 4: malformed CSV"),
        ("crows_pairs", ",sent_more,sent_less,stereo_antistereo,bias_type\n", "no rows under the header"),
        ("classifier_fairness", "text,label,sex\nhi,1,f\n", r"missing the attribute_column 'gender'; found columns "
                                                             r"\['text', 'label', 'sex'\] \(set the option attribute_column"),
        ("classifier_fairness", "text,label,gender,gender\nhi,1,f,m\n",
         r"line 1: the header repeats the column name\(s\) \['gender'\]"),
        ("classifier_fairness", CLASSIFIER + "Odd one,,male\n", r"line 6: empty 'label'"),
        ("representation", "text,gender\nhi,f\nho,m\n", r"missing the type_column 'term'"),
        ("representation", REPRESENTATION + "x,male\n", r"line 4: 2 field\(s\), but the header has 3"),
        ("swap_list", "language,term_a,term_b\nen,he,she\n", r"missing column\(s\) \['category', 'type', 'group_a'"),
        ("swap_list", SWAPS + "en,gender,pronoun,male,he,female,they,,\n",
         r"line 4: 'he' already maps to 'she' \(.*line 2\)"),
        ("counterfactual_texts", "id,sentence\na,hi\n", r"no 'text' column; found \['id', 'sentence'\]"),
    ],
)
def test_csv_errors_name_file_line_and_problem(tmp_path: Path, name: str, content: str, message: str) -> None:
    loader = BY_NAME[name]
    assert re.search(message, _error(loader, _write(tmp_path, loader, content)))


def test_csv_duplicated_ids(tmp_path: Path) -> None:
    crows = BY_NAME["crows_pairs"]
    msg = _error(crows, _write(tmp_path, crows, CROWS + "0,They lie.,We lie.,stereo,race\n"))
    assert "row 4: the pair id '0' is already used on row 2; give each pair its own id" in msg
    texts = BY_NAME["counterfactual_texts"]
    msg = _error(texts, _write(tmp_path, texts, TEXTS + "a,She left.,en\n"))
    assert "line 4: id 'a' is already used on line 2" in msg
    # the same swap row twice is harmless (one mapping); repeated rows of a labelled file are data
    swaps = BY_NAME["swap_list"]
    rules = swaps.load(_write(tmp_path, swaps, SWAPS + SWAPS.splitlines()[1] + "\n"))
    assert {(r.source, r.target) for r in rules} == {("he", "she"), ("she", "he"), ("man", "woman"), ("woman", "man")}
    clf = BY_NAME["classifier_fairness"]
    assert len(clf.load(_write(tmp_path, clf, CLASSIFIER + CLASSIFIER.splitlines()[1] + "\n")).frame) == 5


def test_crows_first_column_is_an_id_only_when_unnamed_or_id(tmp_path: Path) -> None:
    p = tmp_path / "c.csv"
    p.write_text("comment,sent_more,sent_less,stereo_antistereo,bias_type\nsame,a b,c d,stereo,race\n"
                 "same,e f,g h,antistereo,race\n", encoding="utf-8")
    assert crows_pairs.load_crows_pairs(p)["row"].tolist() == ["0", "1"]


# ----------------------------------------------------------------------------- JSON formats


def _mutated(obj: Any, edit: Callable[[Any], None]) -> Any:
    out = json.loads(json.dumps(obj))
    edit(out)
    return out


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("stereoset", lambda o: o["data"].pop("intersentence"), "data.intersentence must be a list of clusters, got NoneType"),
        ("stereoset", lambda o: o["data"]["intrasentence"][0].pop("target"),
         r"data.intrasentence\[0\] \(cluster 'c1'\): field 'target' must be a non-empty string, got None"),
        ("stereoset", lambda o: o["data"]["intrasentence"][0].update(sentences={"a": 1}),
         r"data.intrasentence\[0\] \(cluster 'c1'\): 'sentences' must be a list"),
        ("stereoset", lambda o: o["data"]["intersentence"][0]["sentences"][1].update(gold_label=7),
         r"data.intersentence\[0\] \(cluster 'c2'\): sentences\[1\] \(id 'c2-anti-stereotype'\): gold_label must be one of"),
        ("seat", lambda o: o.pop("attr2"), r"missing key\(s\) \['attr2'\]"),
        ("seat", lambda o: o["targ1"].update(examples="John"), r"targ1.examples must be a non-empty list of strings"),
        ("seat", lambda o: o["attr1"]["examples"].append(3), r"attr1.examples\[2\] must be a non-empty string, got 3"),
        ("bold", lambda o: o.update(American_actors=["x"]), "group 'American_actors' must map names to prompt lists, got list"),
        ("bold", lambda o: o["American_actors"]["Tom_Hanks"].append(5),
         r"group 'American_actors', name 'Tom_Hanks': prompt \[2\] must be a string"),
        ("templates", lambda o: o.pop("templates"), "missing required field 'templates'"),
        ("templates", lambda o: o.update(targets=[["he"]]), r"targets\[0\] must have 2 terms"),
        ("templates", lambda o: o.update(templates=["no slots"]), r"templates\[0\] must contain \[TARGET\] exactly once"),
    ],
)
def test_json_errors_name_file_key_and_problem(tmp_path: Path, name: str, edit: Callable[[Any], None], message: str) -> None:
    loader = BY_NAME[name]
    obj = json.loads(loader.valid)
    assert re.search(message, _error(loader, _write(tmp_path, loader, _json(_mutated(obj, edit)))))


@pytest.mark.parametrize("name", ["stereoset", "seat", "bold", "templates"])
def test_json_syntax_error_names_line_and_column(tmp_path: Path, name: str) -> None:
    loader = BY_NAME[name]
    broken = loader.valid.replace('"', "", 1)  # line 1 or 2 loses a quote
    msg = _error(loader, _write(tmp_path, loader, broken))
    assert re.search(r"line \d+,? column \d+", msg), msg


@pytest.mark.parametrize("name", ["stereoset", "seat", "bold", "templates"])
def test_json_nested_too_deeply_is_an_error(tmp_path: Path, name: str) -> None:
    loader = BY_NAME[name]
    assert "JSON nested too deeply to read" in _error(loader, _write(tmp_path, loader, "[" * 200_000 + "]" * 200_000))


def test_json_repeated_keys_name_the_key_path(tmp_path: Path) -> None:
    st_ = BY_NAME["stereoset"]
    text = st_.valid.replace('"target": "nurse",', '"target": "nurse", "target": "doctor",', 1)
    msg = _error(st_, _write(tmp_path, st_, text))
    assert "at data.intrasentence[0]: the key 'target' appears more than once in one object" in msg
    seat_ = BY_NAME["seat"]
    msg = _error(seat_, _write(tmp_path, seat_, seat_.valid[:-2] + ',\n "targ1": {"category": "X", "examples": ["y"]}\n}'))
    assert "at (top level): the key 'targ1' appears more than once" in msg
    bold_ = BY_NAME["bold"]
    text = bold_.valid.replace('"Tom_Hanks": [', '"Tom_Hanks": ["Tom Hanks acted"], "Tom_Hanks": [', 1)
    assert "at American_actors: the key 'Tom_Hanks' appears more than once" in _error(bold_, _write(tmp_path, bold_, text))


def test_stereoset_duplicated_ids_are_errors(tmp_path: Path) -> None:
    loader = BY_NAME["stereoset"]
    obj = _mutated(stereoset_obj(), lambda o: o["data"]["intersentence"][0].update(id="c1"))
    msg = _error(loader, _write(tmp_path, loader, _json(obj)))
    assert "data.intersentence[0]: the cluster id 'c1' is already used at data.intrasentence[0]; ids must be unique" in msg
    obj = _mutated(stereoset_obj(), lambda o: o["data"]["intersentence"][0]["sentences"][2].update(id="c1-unrelated"))
    msg = _error(loader, _write(tmp_path, loader, _json(obj)))
    assert ("data.intersentence[0].sentences[2]: the sentence id 'c1-unrelated' is already used at "
            "data.intrasentence[0].sentences[2]") in msg


def test_stereoset_predictions_bad_input(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "pred.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"intrasentence": [{"id": "a", "score": 0.5}]}).encode())
    assert stereoset.load_predictions(p) == {"a": 0.5}  # a BOM loads
    p.write_text("", encoding="utf-8")
    with pytest.raises(ProbeError, match=r"pred\.json: the file is empty"):
        stereoset.load_predictions(p)
    p.write_text(json.dumps({"intrasentence": [{"id": "a", "score": "high"}]}), encoding="utf-8")
    with pytest.raises(ProbeError, match=r"pred\.json: intrasentence\[0\] \(id 'a'\): 'score' must be a number"):
        stereoset.load_predictions(p)
    p.write_text(json.dumps({"intrasentence": [{"id": 1, "score": 0.5}]}), encoding="utf-8")
    with pytest.raises(ProbeError, match=r"pred\.json: intrasentence\[0\] must be an object with a string 'id'"):
        stereoset.load_predictions(p)
    # a repeated id keeps the last score (the reference's dict) and says so when the scores differ
    p.write_text(json.dumps({"intersentence": [{"id": "a", "score": 0.5}, {"id": "a", "score": 0.7}]}), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="probes.stereoset"):
        assert stereoset.load_predictions(p) == {"a": 0.7}
    assert "intersentence[1]: sentence id 'a' has a second, different score" in caplog.text


def test_seat_repeated_examples_warn_and_load_once(tmp_path: Path) -> None:
    loader = BY_NAME["seat"]
    obj = _mutated(seat_obj(), lambda o: o["attr1"]["examples"].append("office"))
    t = loader.load(_write(tmp_path, loader, _json(obj)))
    assert t.examples["attr1"] == ["office", "salary"] and "attr1 (Career) repeats ['office']" in t.warnings[0]


def test_templates_duplicate_set_names_name_both_files(tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / f"{sub}.json").write_text(_json(TEMPLATE), encoding="utf-8")
    with pytest.raises(ProbeError, match=r"b\.json: set name 's' is already used by .*a\.json"):
        templates.load_template_sets(tmp_path)


# ------------------------------------------------------------------------------------ BBQ


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("example_id"), r"line 2: missing required field\(s\) \['example_id'\]"),
        (lambda r: r.update(label=[1]), r"line 2 \(example_id 1\): label must be 0, 1 or 2, got \[1\]"),
        (lambda r: r.update(label=True), r"line 2 \(example_id 1\): label must be 0, 1 or 2, got True"),
        (lambda r: r.update(context=5), r"line 2 \(example_id 1\): field 'context' must be a string, got int"),
        (lambda r: r.update(answer_info="x"), r"line 2 \(example_id 1\): answer_info must map ans0, ans1, ans2"),
        (lambda r: r["answer_info"].update(ans1=[1, 2]), r"answer_info.ans1 must be a list of strings"),
        (lambda r: r.update(additional_metadata={}), r"additional_metadata.stereotyped_groups is missing"),
        (lambda r: r.update(question_polarity="pos"), r"question_polarity must be one of"),
    ],
)
def test_bbq_errors_name_file_line_and_field(tmp_path: Path, edit: Callable[[Any], None], message: str) -> None:
    loader = BY_NAME["bbq"]
    rows = [bbq_row(0), _mutated(bbq_row(1), edit)]
    assert re.search(message, _error(loader, _write(tmp_path, loader, bbq_text(rows))))


def test_bbq_malformed_json_line_and_repeated_key(tmp_path: Path) -> None:
    loader = BY_NAME["bbq"]
    msg = _error(loader, _write(tmp_path, loader, bbq_text([bbq_row(0)]) + '{"example_id": 1,\n'))
    assert "line 2: malformed JSON (Expecting property name enclosed in double quotes at column" in msg
    line = json.dumps(bbq_row(1)).replace('"label": 2', '"label": 2, "label": 0')
    msg = _error(loader, _write(tmp_path, loader, bbq_text([bbq_row(0)]) + line + "\n"))
    assert "line 2: at (top level): the key 'label' appears more than once in one object" in msg


def test_bbq_duplicated_example_ids(tmp_path: Path) -> None:
    loader = BY_NAME["bbq"]
    msg = _error(loader, _write(tmp_path, loader, bbq_text([bbq_row(0), bbq_row(1), bbq_row(0)])))
    assert "line 3: example_id 0 of category 'Age' is already used on line 1" in msg
    # ids restart per category (upstream files are one category each) and per file of a folder
    assert len(loader.load(_write(tmp_path, loader, bbq_text([bbq_row(0), bbq_row(0, "Race")])))) == 2
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("a.jsonl", "b.jsonl"):
        (folder / name).write_text(bbq_text([bbq_row(0)]), encoding="utf-8")
    assert bbq.load_bbq(folder)["file"].tolist() == ["a.jsonl", "b.jsonl"]


# ----------------------------------------------------------------------- Parquet (classifier)


def test_parquet_tables_name_rows_and_columns(tmp_path: Path) -> None:
    p = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["a", "b", ""], "label": [1, 0, 1], "gender": ["f", "m", "f"]}).to_parquet(p)
    with pytest.raises(ProbeError, match=r"d\.parquet: row 2: empty or non-text 'text'"):
        classifier_fairness.load_labelled(p)
    p.write_bytes(b"not parquet at all")
    with pytest.raises(ProbeError, match=r"d\.parquet: not a readable Parquet file"):
        classifier_fairness.load_labelled(p)
    x = tmp_path / "d.xlsx"
    x.write_text("x", encoding="utf-8")
    with pytest.raises(ProbeError, match=r"d\.xlsx: unsupported file type '\.xlsx'; use \.csv, \.tsv or \.parquet"):
        representation.load_attribute_texts(x)


# ------------------------------------------------------------------------ property-based


def _check(loader: Loader, content: bytes) -> None:
    """The loader returns or raises a ProbeError naming the file; anything else fails."""
    with tempfile.TemporaryDirectory() as d:
        p = _write(Path(d), loader, content)
        try:
            loader.load(p)
        except ProbeError as exc:
            assert p.name in str(exc), f"{loader.name}: the error does not name the file: {exc}"


@pytest.mark.parametrize("loader", LOADERS, ids=IDS)
@FEW
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(lambda s: s.encode("utf-8")))
def test_arbitrary_bytes_load_or_raise_probe_error(loader: Loader, data: bytes) -> None:
    _check(loader, data)


@pytest.mark.parametrize("loader", LOADERS, ids=IDS)
@FEW
@given(st.data())
def test_mutated_valid_files_load_or_raise_probe_error(loader: Loader, data: st.DataObject) -> None:
    raw = loader.valid.encode("utf-8")
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw)))
        j = data.draw(st.integers(i, min(len(raw), i + 8)))
        ins = data.draw(st.sampled_from([b"", b",", b'"', b"\n", b"\r\n", b"{", b"]", b"\xff", b"\x00", b"\t",
                                         b"\xef\xbb\xbf", b"null", b"1e999"]) | st.binary(max_size=4))
        raw = raw[:i] + ins + raw[j:]
    _check(loader, raw)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a JSON value (the value itself included)."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    out = json.loads(json.dumps(obj))
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize("name", ["stereoset", "seat", "bold", "templates", "bbq"])
@FEW
@given(st.data())
def test_any_json_value_in_any_field_loads_or_raises_probe_error(name: str, data: st.DataObject) -> None:
    """Wrong types anywhere: each key path of a valid file gets an arbitrary JSON value."""
    loader = BY_NAME[name]
    obj: Any = [bbq_row(0), bbq_row(1)] if name == "bbq" else json.loads(loader.valid)
    path = data.draw(st.sampled_from(_paths(obj)))
    new = _replace(obj, path, data.draw(JSON_VALUES))
    text = bbq_text(new) if name == "bbq" and isinstance(new, list) else json.dumps(new)
    _check(loader, text.encode("utf-8"))


# ------------------------------------------------------------------ the counterfactual swapper

SYMMETRIC = ("language,category,type,group_a,term_a,group_b,term_b\n"
             "en,gender,pronoun,male,he,female,she\n"
             "en,gender,noun,male,man,female,woman\n"
             "en,gender,noun,male,boys,female,girls\n"
             "en,gender,noun,male,king,female,queen\n"
             "en,gender,name,male,John,female,Mary\n"
             "en,race,noun,black,african american,white,european american\n")
TERMS = ["he", "she", "man", "woman", "boys", "girls", "king", "queen", "john", "mary",
         "african american", "european american"]
COUNTERPART = {**dict(zip(TERMS[0::2], TERMS[1::2], strict=True)), **dict(zip(TERMS[1::2], TERMS[0::2], strict=True))}
NEUTRAL = ["the", "table", "is", "blue", "runs", "quickly", "and", "a", "today", "7", "x1", "HELLO", "Sheet", "mankind"]
SEPARATORS = [" ", "  ", ", ", ". ", "! ", "\n", " (", ") ", "'s ", " - "]


@pytest.fixture(scope="module")
def symmetric_swapper(tmp_path_factory: pytest.TempPathFactory) -> swaps.Swapper:
    p = tmp_path_factory.mktemp("swaps") / "symmetric.csv"
    p.write_text(SYMMETRIC, encoding="utf-8")
    return swaps.Swapper(swaps.load_swap_rules(p), "en")


@pytest.fixture(scope="module")
def default_rules() -> list[swaps.SwapRule]:
    return swaps.load_swap_rules()


def _cased(word: str, how: str) -> str:
    return {"lower": word.lower(), "upper": word.upper(), "title": word.title(),
            "first": word[:1].upper() + word[1:].lower()}[how]


TOKENS = st.one_of(
    st.tuples(st.sampled_from(TERMS), st.sampled_from(["lower", "upper", "title", "first"])).map(lambda t: _cased(*t)),
    st.sampled_from(NEUTRAL),
)
SENTENCES = st.lists(st.tuples(TOKENS, st.sampled_from(SEPARATORS)), min_size=1, max_size=10).map(
    lambda parts: "".join(w + s for w, s in parts))


def _check_spans(text: str, res: swaps.SwapResult) -> None:
    """Every swap's spans point at what it replaced and what replaced it; the rest is untouched."""
    old_pos = new_pos = 0
    for s in res.swaps:
        assert text[s.start:s.end] == s.original and res.text[s.new_start:s.new_end] == s.replacement
        assert text[old_pos:s.start] == res.text[new_pos:s.new_start]
        old_pos, new_pos = s.end, s.new_end
    assert text[old_pos:] == res.text[new_pos:]


@settings(max_examples=100, deadline=None)
@given(SENTENCES)
def test_swapping_twice_with_a_symmetric_list_restores_the_text(symmetric_swapper: swaps.Swapper,
                                                                  text: str) -> None:
    once = symmetric_swapper.swap(text)
    _check_spans(text, once)
    assert symmetric_swapper.swap(once.text).text == text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TERMS), st.sampled_from(["lower", "upper", "title", "first"])),
                min_size=1, max_size=5))
def test_each_swap_keeps_the_case_of_what_it_replaced(symmetric_swapper: swaps.Swapper,
                                                      words: list[tuple[str, str]]) -> None:
    """lower → lower, UPPER → UPPER, Title Case → Title Case, a capital first letter → the same
    (a term written as in the list, "John", gets the list's spelling of its counterpart)."""
    text = " and ".join(_cased(w, how) for w, how in words)
    res = symmetric_swapper.swap(text)
    assert [s.replacement for s in res.swaps] == [_cased(COUNTERPART[w], how) for w, how in words]


def _has_term(text: str, rules: list[swaps.SwapRule], language: str) -> bool:
    low = morphology_tr.lower(text, language)
    words = {morphology_tr.lower(w, language) for r in rules if r.language == language
             for w in (r.source, r.source_stem) if w}
    return any(w.split()[0] in low for w in words)


@pytest.mark.parametrize("language", ["en", "tr"])
@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=60))
def test_a_text_without_any_listed_term_is_unchanged(default_rules: list[swaps.SwapRule], language: str,
                                                     text: str) -> None:
    swapper = swaps.Swapper(default_rules, language)
    res = swapper.swap(text)
    _check_spans(text, res)
    if not _has_term(text, default_rules, language):
        assert res.text == text and res.swaps == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["o", "O", "onu", "ona", "onlar", "bir", "gün", "eve", "geldi", "ve", "çok", "mutlu"]),
                min_size=1, max_size=8))
def test_turkish_o_is_never_swapped(default_rules: list[swaps.SwapRule], words: list[str]) -> None:
    text = " ".join(words) + "."
    assert swaps.Swapper(default_rules, "tr").swap(text).text == text
