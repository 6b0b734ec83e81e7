"""Task loaders on fixture files written in the official GLUE and XNLI layouts, and custom files."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pixeltext_train.evaluate.tasks import (
    GLUE,
    GLUE_FOLDERS,
    Example,
    ExampleStore,
    TaskError,
    custom,
    load_task,
    rotten_tomatoes,
    xnli,
)

GLUE_FIXTURES = {
    "cola": (None, ["gj04\t1\t\tOur friends won't buy this analysis.", "gj04\t0\t*\tThey drank the pub."]),
    "sst2": ("sentence\tlabel", ["a gorgeous , witty film \t1", "unpleasant and dull \t0"]),
    "mrpc": (
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        [
            '1\t702876\t702977\tAmrozi accused his brother .\tReferring to him as "the witness" , Amrozi accused him .',  # noqa: E501 (a fixture row)
            "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 .",
        ],
    ),
    "qqp": (
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        [
            "1\t3\t4\tHow do I learn Python?\tWhat is the best way to learn Python?\t1",
            "2\t5\t6\tWhy is the sky blue?\tHow tall is Everest?\t0",
            "3\t7\tmalformed row",
        ],
    ),
    "stsb": (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
        [
            "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000",  # noqa: E501 (a fixture row)
            "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man plays a flute.\tA man cuts a tomato.\t0.500",  # noqa: E501 (a fixture row)
        ],
    ),
    "mnli": (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label",
        [
            "0\t1\t1e\tgov\t-\t-\t-\t-\tYou don't have to stay there.\tYou can leave.\tentailment\tentailment",  # noqa: E501 (a fixture row)
            "1\t2\t2c\tgov\t-\t-\t-\t-\tThe cat slept.\tThe cat ran all night.\tcontradiction\tcontradiction",
        ],
    ),
    "qnli": (
        "index\tquestion\tsentence\tlabel",
        [
            "0\tWhen was it built?\tIt was built in 1850.\tentailment",
            "1\tWho won?\tThe sky is blue.\tnot_entailment",
        ],
    ),
    "rte": (
        "index\tsentence1\tsentence2\tlabel",
        [
            "0\tDana bought a car.\tDana owns a car.\tentailment",
            "1\tIt rained.\tThe sun shone all day.\tnot_entailment",
        ],
    ),
    "wnli": (
        "index\tsentence1\tsentence2\tlabel",
        [
            "0\tI stuck a pin through a carrot.\tThe carrot had a hole.\t1",
            "1\tJohn hit Bill.\tBill hit John.\t0",
        ],
    ),
}


@pytest.fixture()
def glue_root(tmp_path):
    for task, (header, rows) in GLUE_FIXTURES.items():
        folder = tmp_path / GLUE_FOLDERS[task]
        folder.mkdir()
        text = "\n".join(([header] if header else []) + rows) + "\n"
        (folder / "train.tsv").write_text(text, encoding="utf-8")
        for dev in GLUE[task].dev:
            (folder / f"{dev}.tsv").write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("name", sorted(GLUE))
def test_every_glue_task_loads_from_its_official_layout(glue_root, name):
    task = load_task(name, {"data_dir": str(glue_root / GLUE_FOLDERS[name])})
    assert len(task.train) == 2 and task.skipped == (2 if name == "qqp" else 0)  # QQP's malformed row
    assert list(task.evaluations) == (
        ["validation_matched", "validation_mismatched"] if name == "mnli" else ["validation"]
    )
    assert task.regression == (name == "stsb")
    assert task.pairs == (name not in ("cola", "sst2"))
    if name == "stsb":
        assert [e.label for e in task.train] == [5.0, 0.5] and task.metrics == ["pearson", "spearman"]
    elif name == "mrpc":
        assert task.train[0].pair.startswith('Referring to him as "the witness"') and task.train[0].label == 1
    elif name == "cola":
        assert (
            task.train[1].text == "They drank the pub."
            and task.train[1].label == 0
            and task.metrics[0] == "mcc"
        )
    elif name == "mnli":
        assert [task.labels[e.label] for e in task.train] == ["entailment", "contradiction"]
    # the folder above the task folder works too
    assert len(load_task(name, {"data_dir": str(glue_root)}).train) == 2


def test_a_missing_glue_file_is_named(tmp_path):
    (tmp_path / "RTE").mkdir()
    with pytest.raises(TaskError, match=r"train\.tsv"):
        load_task("rte", {"data_dir": str(tmp_path / "RTE")})
    with pytest.raises(TaskError, match="data_dir"):
        load_task("rte", {})


def xnli_tsv(folder, languages=("en", "fr", "ar")):
    header = (
        "language\tgold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1\tsentence2\tpromptID"
    )
    rows = [header]
    for language in languages:
        rows += [
            f"{language}\tentailment\t-\t-\tpremise {language} one\thypothesis {language} one\t1",
            f"{language}\tcontradiction\t-\t-\tpremise {language} two\thypothesis {language} two\t2",
        ]
    (folder / "XNLI-1.0").mkdir()
    for split in ("dev", "test"):
        (folder / "XNLI-1.0" / f"xnli.{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "XNLI-MT-1.0" / "multinli").mkdir(parents=True)
    for language in languages:
        lines = [
            "premise\thypo\tlabel",
            f"a {language} premise\ta {language} hypothesis\tcontradictory",
            f"another {language} premise\tanother hypothesis\tneutral",
        ]
        (folder / "XNLI-MT-1.0" / "multinli" / f"multinli.train.{language}.tsv").write_text(
            "\n".join(lines) + "\n"
        )


def test_xnli_official_tsv_in_both_settings(tmp_path):
    xnli_tsv(tmp_path)
    english = xnli(tmp_path, "english", ["en", "fr", "ar"])
    assert len(english.train) == 2 and {e.label for e in english.train} == {1, 2}  # neutral, contradiction
    assert next(iter(english.evaluations)) == "validation/en"
    assert set(english.evaluations) == {
        f"{s}/{lang}" for s in ("validation", "test") for lang in ("en", "fr", "ar")
    }
    assert english.evaluations["test/fr"][0].text == "premise fr one"
    assert english.averages["validation"] == ["validation/en", "validation/ar", "validation/fr"]
    everything = xnli(tmp_path, "translate-train-all", ["en", "fr", "ar"])
    assert len(everything.train) == 6


def test_xnli_json_lines_layout(tmp_path):
    for split in ("train", "validation", "test"):
        for language in ("en", "de"):
            records = [
                {"premise": f"{split} {language}", "hypothesis": "h", "label": i % 3} for i in range(3)
            ]
            (tmp_path / f"{split}-{language}.jsonl").write_text(
                "\n".join(json.dumps(r) for r in records) + "\n"
            )
    task = xnli(tmp_path, "translate-train-all", ["en", "de"])
    assert len(task.train) == 6 and len(task.evaluations["test/de"]) == 3
    assert [e.label for e in task.train[:3]] == [0, 1, 2]


def test_xnli_malformed_rows_are_counted_not_raised(tmp_path):
    xnli_tsv(tmp_path)
    train = tmp_path / "XNLI-MT-1.0" / "multinli" / "multinli.train.en.tsv"
    with open(train, "a", encoding="utf-8") as handle:
        handle.write("a short row\n")  # no hypothesis, no label
        handle.write("a premise\ta hypothesis\tmaybe\n")  # an unknown label
    dev = tmp_path / "XNLI-1.0" / "xnli.dev.tsv"
    with open(dev, "a", encoding="utf-8") as handle:
        handle.write("en\tentailment\t-\t-\t\t\t3\n")  # empty texts
    task = xnli(tmp_path, "english", ["en", "fr"])
    assert len(task.train) == 2 and len(task.evaluations["validation/en"]) == 2
    assert task.skipped == 3
    assert task.skip_reasons == {"missing premise or hypothesis": 2, "missing or unknown label": 1}
    for split in ("train", "validation"):
        (tmp_path / "jsonl").mkdir(exist_ok=True)
        lines = ['{"premise": "p", "hypothesis": "h", "label": 0}', "{not json", "[1, 2]", '{"premise": "p"}']
        (tmp_path / "jsonl" / f"{split}-en.jsonl").write_text("\n".join(lines) + "\n")
    task = xnli(tmp_path / "jsonl", "english", ["en"])
    assert len(task.train) == 1 and task.skipped == 6
    assert task.skip_reasons == {
        "line that is not JSON": 2,
        "line that is not a JSON object": 2,
        "missing premise or hypothesis": 2,
    }


ROWS = [
    {"review": "great fun", "other": "a", "stars": "pos"},
    {"review": "dull and long", "other": "b", "stars": "neg"},
    {"review": "loved it", "other": "c", "stars": "pos"},
]


def write_all_formats(folder):
    paths = {}
    paths["csv"] = folder / "data.csv"
    paths["csv"].write_text(
        "review,other,stars\n" + "".join(f'"{r["review"]}",{r["other"]},{r["stars"]}\n' for r in ROWS)
    )
    paths["tsv"] = folder / "data.tsv"
    paths["tsv"].write_text(
        "review\tother\tstars\n" + "".join(f"{r['review']}\t{r['other']}\t{r['stars']}\n" for r in ROWS)
    )
    paths["jsonl"] = folder / "data.jsonl"
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    paths["parquet"] = folder / "data.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), paths["parquet"])
    return paths


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "parquet"])
def test_custom_task_in_every_format(tmp_path, kind):
    path = str(write_all_formats(tmp_path)[kind])
    task = load_task(
        "custom",
        {"train": path, "validation": path, "text": "review", "text_pair": "other", "label": "stars"},
    )
    assert task.labels == ["neg", "pos"] and not task.regression
    assert [(e.text, e.pair, e.label) for e in task.train] == [
        ("great fun", "a", 1),
        ("dull and long", "b", 0),
        ("loved it", "c", 1),
    ]
    assert task.metrics == ["accuracy", "f1"]


def test_custom_regression_and_errors(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps({"t": f"s{i}", "y": i / 2}) for i in range(4)).replace("}{", "}\n{"))
    task = custom(str(path), str(path), "t", "y")
    assert task.regression and [e.label for e in task.train] == [0.0, 0.5, 1.0, 1.5]
    with pytest.raises(TaskError, match="no column"):
        custom(str(path), str(path), "text", "y")
    with pytest.raises(TaskError, match="needs"):
        load_task("custom", {"train": str(path)})


def test_rotten_tomatoes_is_real_and_split_the_same_way_every_time():
    task = rotten_tomatoes()
    sizes = {name: len(rows) for name, rows in [("train", task.train), *task.evaluations.items()]}
    assert sum(sizes.values()) == 12808  # 7,403 fresh + 5,405 rotten reviews, plots dropped
    shares = {name: size / 12808 for name, size in sizes.items()}  # 80/10/10 by movie, so roughly
    assert (
        0.75 < shares["train"] < 0.85 and 0.05 < shares["validation"] < 0.15 and 0.05 < shares["test"] < 0.15
    )
    assert rotten_tomatoes().train == task.train  # the same split every time


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_unusable_rows_are_skipped_and_counted_by_reason(tmp_path):
    lines = [
        {"t": "good one", "y": 1},
        {"t": "good two", "y": 0.0},  # 0.0 and 0 are one class
        {"t": "no label", "y": None},
        {"t": "empty label", "y": ""},
        {"t": "not a number", "y": float("nan")},  # NaN in JSON Lines
        {"t": None, "y": 1},
        {"t": "   ", "y": 0},
        {"y": 1},
        [1, 2],
    ]
    path = write(tmp_path / "a.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n{broken\n")
    task = custom(path, path, "t", "y")
    assert task.labels == ["0", "1"] and not task.regression
    assert [(e.text, e.label) for e in task.train] == [("good one", 1), ("good two", 0)]
    per_file = {
        "no label": 3,
        "no text": 3,
        "a JSON list, not an object": 1,
        "invalid JSON (Expecting property name enclosed in double quotes)": 1,
    }
    assert task.skip_reasons == {
        reason: 2 * count for reason, count in per_file.items()
    }  # train + validation
    assert task.skipped == 2 * sum(per_file.values())


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet"])
def test_a_header_that_names_a_column_twice_is_refused_naming_it(tmp_path, kind):
    path = tmp_path / f"twice.{kind}"
    if kind == "parquet":
        pq.write_table(
            pa.table([["pos", "neg"], ["fine", "dull"], ["x", "y"]], ["label", "text", "text"]), path
        )
    else:
        separator = "\t" if kind == "tsv" else ","
        path.write_text(
            separator.join(["label", "text", "text"]) + "\n" + separator.join(["pos", "fine", "x"]) + "\n"
        )
    with pytest.raises(TaskError, match=rf"twice\.{kind} names the column 'text' more than once"):
        custom(str(path), str(path), "text", "label")


def test_rows_whose_cells_are_lists_objects_repeated_keys_or_not_utf8_are_skipped_and_counted(tmp_path):
    good = [{"t": "good one", "y": "pos"}, {"t": "good two", "y": "neg"}]
    bad = [
        '{"t": "a list label", "y": ["neg"]}',
        '{"t": "an object label", "y": {"class": "neg"}}',
        '{"t": ["a", "list"], "y": "pos"}',
        '{"t": "first", "t": "second", "y": "pos"}',
    ]
    lines = [json.dumps(row).encode() for row in good] + [line.encode() for line in bad]
    lines.append('{"t": "caf\u00e9", "y": "pos"}'.encode("latin-1"))  # é as one Latin-1 byte
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    task = custom(str(path), str(path), "t", "y")
    assert [(e.text, task.labels[e.label]) for e in task.train] == [("good one", "pos"), ("good two", "neg")]
    assert task.skip_reasons == {
        reason: 2 * count  # train + validation
        for reason, count in {
            "y is a list, not a value": 1,
            "y is an object, not a value": 1,
            "t is a list, not a value": 1,
            "the key 't' given twice": 1,
            "not valid UTF-8": 1,
        }.items()
    }
    table = tmp_path / "rows.csv"
    table.write_bytes(b"t,y\ngood one,pos\ngood two,neg\n" + "café,pos\n".encode("latin-1"))
    assert custom(str(table), str(table), "t", "y").skip_reasons == {"not valid UTF-8": 2}


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_a_file_that_is_not_a_table_of_text_is_an_error_naming_it(tmp_path, kind):
    spreadsheet = tmp_path / f"book.{kind}"  # a zip (as an XLSX file is) renamed
    with zipfile.ZipFile(spreadsheet, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(TaskError, match=rf"book\.{kind} is not a (text|Parquet) file"):
        custom(str(spreadsheet), str(spreadsheet), "text", "label")


def test_tsv_cells_are_read_without_quoting_and_misaligned_rows_are_skipped(tmp_path):
    rows = [
        "text\tlabel",
        '"a quoted start\tpos',
        "plain\tneg",
        "has\ta tab\tpos",
        "NaN label\tNaN",
        "last\tneg",
    ]
    path = write(tmp_path / "a.tsv", "\n".join(rows) + "\n")
    task = custom(path, path, "text", "label")
    assert [e.text for e in task.train] == ['"a quoted start', "plain", "last"]
    assert task.skip_reasons == {"3 cells, the header has 2": 2, "no label": 2}  # (NaN is no label)


def test_numbers_written_two_ways_are_one_class_and_fractions_a_score(tmp_path):
    classes = write(tmp_path / "c.csv", "x,y\na,1\nb,1.0\nc,0\nd, 0 \n")
    task = custom(classes, classes, "x", "y")
    assert task.labels == ["0", "1"] and [e.label for e in task.train] == [1, 1, 0, 0]
    scores = write(tmp_path / "s.csv", "x,y\na,1\nb,2.5\nc,0\n")
    assert custom(scores, scores, "x", "y").regression


@pytest.mark.parametrize(
    ("train", "validation", "complaint"),
    [
        ("x,y\na,pos\nb,pos\n", "x,y\na,pos\n", "single class"),
        ("x,y\na,pos\nb,neg\n", "x,y\na,pos\nb,neutral\n", r"v\.csv row 3: label 'neutral' does not occur"),
        ("x,y\na,\nb,\n", "x,y\na,pos\n", r"t\.csv has no usable row"),
        ("x,z\na,pos\n", "x,y\na,pos\n", "no column"),
    ],
)
def test_a_task_that_cannot_work_is_an_error_naming_file_and_row(tmp_path, train, validation, complaint):
    with pytest.raises(TaskError, match=complaint):
        custom(write(tmp_path / "t.csv", train), write(tmp_path / "v.csv", validation), "x", "y")


def test_an_example_store_gives_back_every_example_and_holds_little():
    """Examples of any text (lone surrogates and all), read back in any order, also after
    pickling (a spawned DataLoader worker); 100,000 of them hold about 8 bytes each in RAM."""
    import pickle
    import tracemalloc

    rng = random.Random(0)
    alphabet = 'aé€😀\ud800\u0000\n\t"\\ב'
    examples = [
        Example(
            "".join(rng.choices(alphabet, k=rng.randint(0, 30))),
            None if i % 3 else "".join(rng.choices(alphabet, k=5)),
            i % 4 if i % 2 else i / 7,
        )
        for i in range(500)
    ]
    store = ExampleStore(examples)
    assert len(store) == 500 and list(store) == examples
    assert store[-1] == examples[-1] and store[10:20] == examples[10:20]
    with pytest.raises(IndexError):
        store[500]
    copy = pickle.loads(pickle.dumps(store))
    assert [copy[i] for i in (499, 0, 250)] == [examples[499], examples[0], examples[250]]
    path = Path(store.path)
    del store, copy
    assert not path.exists()  # removed with the store that made it
    tracemalloc.start()
    big = ExampleStore(Example(f"premise number {i} " * 8, f"hypothesis {i}", i % 3) for i in range(100_000))
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(big) == 100_000 and big[77_777].pair == "hypothesis 77777"
    assert held < 2_000_000  # a list of these examples would hold over 30 MB
