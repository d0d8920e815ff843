"""Sequence data on small hand-made CSVs: windows checked by value, group splits, malformed files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import UserError
from edgekit.trainer import seq_data
from edgekit.trainer.seq_diagnose import diagnose


def write_csv(path: Path, labels: list[str], start: float = 0.0, extra: dict[str, list[str]] | None = None) -> Path:
    """Frame i has features (start + i, -(start + i)), so every window can be checked by value."""
    cols = ["t", "a", "b", "activity", *(extra or {})]
    lines = [",".join(cols)]
    for i, lab in enumerate(labels):
        v = start + i
        row = [f"{i * 0.02:.2f}", f"{v}", f"{-v}", lab, *[vals[i] for vals in (extra or {}).values()]]
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_windows_are_label_pure_and_never_cross_recordings(tmp_path):
    # run of 10 "walk", 2 unlabeled, 7 "sit", 5 "walk": window 4, stride 3
    labels = ["walk"] * 10 + [""] * 2 + ["sit"] * 7 + ["walk"] * 5
    a = seq_data.read_csv(write_csv(tmp_path / "a.csv", labels))
    b = seq_data.read_csv(write_csv(tmp_path / "b.csv", ["sit"] * 3 + ["walk"] * 4, start=100))
    assert a.features == ["a", "b"]  # the time column is not a feature
    w = seq_data.make_windows([a, b], window=4, stride=3)
    assert w.labels == ["sit", "walk"]
    # a: walk run 0-9 → starts 0,3,6; sit run 12-18 → 12,15; walk run 19-23 → 19; b: sit run too short; walk 103..
    got = [(str(s), int(st), w.labels[y]) for s, st, y in zip(w.sources, w.starts, w.y, strict=True)]
    assert got == [("a.csv", 0, "walk"), ("a.csv", 3, "walk"), ("a.csv", 6, "walk"), ("a.csv", 12, "sit"),
                   ("a.csv", 15, "sit"), ("a.csv", 19, "walk"), ("b.csv", 3, "walk")]
    for k, (src, st) in enumerate(zip(w.sources, w.starts, strict=True)):
        base = 100 if src == "b.csv" else 0
        expected = np.arange(base + st, base + st + 4, dtype=np.float32)
        np.testing.assert_array_equal(w.x[k, :, 0], expected)
        np.testing.assert_array_equal(w.x[k, :, 1], -expected)


def test_include_labels_and_fixed_class_list(tmp_path):
    rec = seq_data.read_csv(write_csv(tmp_path / "a.csv", ["walk"] * 4 + ["sit"] * 4 + ["turn"] * 4))
    w = seq_data.make_windows([rec], 4, 4, include=["walk", "turn"])
    assert w.labels == ["turn", "walk"] and list(w.starts) == [0, 8]
    w2 = seq_data.make_windows([rec], 4, 4, labels=["walk", "sit", "turn"])
    assert list(w2.y) == [0, 1, 2]


def test_group_by_file_pattern_and_column(tmp_path):
    for name, start in (("exp01_user01", 0), ("exp02_user01", 50), ("exp03_user02", 100), ("exp04_user03", 150)):
        write_csv(tmp_path / f"{name}.csv", ["walk"] * 8 + ["sit"] * 8, start=start)
    recs, skipped = seq_data.load_folder(tmp_path, group_by=r"file:user(\d+)")
    assert skipped == []
    w = seq_data.make_windows(recs, 4, 4)
    assert sorted(set(w.groups)) == ["01", "02", "03"]
    # three people: too few for a separate validation person, so validation watches the test person
    assert seq_data.split_by_group(w, test_groups=["02"]) == {"train": ["01", "03"], "val": ["02"], "test": ["02"]}
    write_csv(tmp_path / "exp05_user04.csv", ["walk"] * 8 + ["sit"] * 8)
    recs, _ = seq_data.load_folder(tmp_path, group_by=r"file:user(\d+)")
    w = seq_data.make_windows(recs, 4, 4)
    split = seq_data.split_by_group(w, test_groups=["02"], seed=3)
    assert split["test"] == ["02"] and len(split["val"]) == 1 and len(split["train"]) == 2
    assert sorted(split["train"] + split["val"] + split["test"]) == ["01", "02", "03", "04"]
    per_person = {"01": 8, "02": 4, "03": 4, "04": 4}  # person 01 has two recordings
    for groups in split.values():  # every window of a person lands in that person's split
        part = seq_data.select(w, groups)
        assert set(part.groups) == set(groups) and len(part) == sum(per_person[g] for g in groups)
    col = seq_data.read_csv(write_csv(tmp_path / "col.csv", ["walk"] * 8, extra={"who": ["x"] * 4 + ["y"] * 4}),
                            group_by="who")
    assert "who" not in col.features
    wc = seq_data.make_windows([col], 4, 2)
    assert list(wc.starts) == [0, 4] and list(wc.groups) == ["x", "y"]  # no window spans x → y


def test_split_rejects_unknown_group_with_suggestion(tmp_path):
    for name in ("alice", "bob", "carol"):
        write_csv(tmp_path / f"{name}.csv", ["walk"] * 8 + ["sit"] * 8)
    recs, _ = seq_data.load_folder(tmp_path)
    w = seq_data.make_windows(recs, 4, 4)
    with pytest.raises(UserError, match="'alise'.*Did you mean 'alice'"):
        seq_data.split_by_group(w, test_groups=["alise"])
    with pytest.raises(UserError, match="Groups: alice, bob, carol"):
        seq_data.split_by_group(w, val_groups=["zed"])
    with pytest.raises(UserError, match="one group"):
        seq_data.split_by_group(seq_data.select(w, ["bob"]))


def test_normaliser_fits_training_windows_only(tmp_path):
    x_train = np.stack([np.full((4, 2), v, np.float32) for v in (1.0, 3.0)])
    norm = seq_data.Normaliser.fit(x_train)
    np.testing.assert_allclose(norm.mean, [2.0, 2.0])
    np.testing.assert_allclose(norm.std, [1.0, 1.0])
    np.testing.assert_allclose(norm(np.full((1, 4, 2), 5.0, np.float32)), 3.0)
    const = seq_data.Normaliser.fit(np.ones((2, 4, 2), np.float32))
    assert np.isfinite(const(np.zeros((1, 4, 2), np.float32))).all()


def test_class_weights_balance():
    w = seq_data.class_weights(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(w, [4 / 6, 4 / 2, 0.0])


@pytest.mark.parametrize("text, match", [
    ("t,a,b\n0,1,2\n", r"bad\.csv: line 1: there is no label column 'activity'"),
    ("t,a,b,activity\n0,1,2,walk\n0.02,x1,2,walk\n", r"bad\.csv: line 3: feature 'a' has the value 'x1'"),
    ("t,a,b,activity\n0,1,2,walk\n0.02,1,2\n", r"bad\.csv: line 3 has 3 fields but the header has 4"),
    ("t,a,b,activity\n0,1,2,\n0.02,1,2,\n", r"bad\.csv has no labeled frames"),
    ("t,a,b,activity\n0,1,,walk\n", r"bad\.csv: line 2: feature 'b' has the value ''"),
])
def test_malformed_csv_is_one_sentence_naming_file_and_line(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(UserError, match=match) as e:
        seq_data.read_csv(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(".")


def test_folder_skips_and_reports_broken_files(tmp_path):
    write_csv(tmp_path / "good.csv", ["walk"] * 8)
    (tmp_path / "ragged.csv").write_text("t,a,b,activity\n0,1,2,walk\n0.02,1\n")
    recs, skipped = seq_data.load_folder(tmp_path)
    assert [r.source for r in recs] == ["good.csv"]
    assert skipped[0][0] == "ragged.csv" and "line 3" in skipped[0][1]
    (tmp_path / "good.csv").unlink()
    with pytest.raises(UserError, match=r"No usable CSV.*ragged\.csv: line 3"):
        seq_data.load_folder(tmp_path)


def test_diagnosis_warns_with_what_to_do(tmp_path):
    # seed-like data: few windows, one class dominating, a class missing from the test group
    write_csv(tmp_path / "p1.csv", ["walk"] * 60 + ["sit"] * 8 + ["lie"] * 3)
    write_csv(tmp_path / "p2.csv", ["walk"] * 40 + ["lie"] * 3)
    recs, _ = seq_data.load_folder(tmp_path)
    w = seq_data.make_windows(recs, 4, 4)
    split = seq_data.split_by_group(w, test_groups=["p2"])
    d = diagnose(recs, w, split, 4, 4)
    text = " ".join(d.warnings)
    assert d.counts["train"].tolist() == [2, 15] and d.imbalance == pytest.approx(7.5)
    assert "Only 17 training windows" in text and "lower --stride" in text
    assert "Class sit has only 2 training windows" in text
    assert "imbalanced 7.5:1 (walk vs sit)" in text and "--class-weights auto" in text
    assert "Label lie never runs 4 frames" in text
    assert "test groups ['p2'] have no window of sit" in text
    with pytest.raises(UserError, match="No window of 65 frames has a single label .*longest labeled run is 60"):
        diagnose(recs, seq_data.make_windows(recs, 65, 4), split, 65, 4)


def test_real_world_csv_quirks(tmp_path, caplog):
    """phyphox-style `Time (s)` headers, rows out of time order, duplicate names, and non-UTF-8 text."""
    (tmp_path / "phyphox.csv").write_text("Time (s),acc_x,activity\n0.04,3,walk\n0.00,1,walk\n0.02,2,walk\n")
    rec = seq_data.read_csv(tmp_path / "phyphox.csv")
    assert rec.features == ["acc_x"] and rec.frames[:, 0].tolist() == [1.0, 2.0, 3.0]  # sorted by time
    (tmp_path / "dup.csv").write_text("t,acc_x,acc_x,activity\n0,1,2,walk\n")
    with pytest.raises(UserError, match="'acc_x' appears more than once"):
        seq_data.read_csv(tmp_path / "dup.csv")
    (tmp_path / "latin1.csv").write_bytes("t,a,activity\n0,1,CAFÉ\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8 text; save the file as UTF-8"):
        seq_data.read_csv(tmp_path / "latin1.csv")
    (tmp_path / "blank_first.csv").write_text("\nt,a,activity\n0,1,walk\n")
    assert seq_data.read_csv(tmp_path / "blank_first.csv").frames.tolist() == [[1.0]]


def test_naming_only_validation_groups_keeps_them_out_of_test(tmp_path):
    for g in "ABCDEF":
        write_csv(tmp_path / f"{g}.csv", ["walk"] * 8 + ["sit"] * 8)
    recs, _ = seq_data.load_folder(tmp_path)
    w = seq_data.make_windows(recs, 4, 4)
    for seed in range(10):
        split = seq_data.split_by_group(w, val_groups=["A", "B"], seed=seed)
        assert split["val"] == ["A", "B"] and not set(split["test"]) & {"A", "B"}


def test_label_typos_person_leaks_and_short_cnn_windows_are_caught(tmp_path, caplog):
    import logging

    from edgekit.trainer.seq_diagnose import check_labels, warn_shared_person
    from edgekit.trainer.sequence import SequenceConfig

    recs = [seq_data.read_csv(write_csv(tmp_path / f"{n}.csv", ["WALKING"] * 4 + ["SITTING"] * 4))
            for n in ("exp01_user01", "exp02_user01", "exp03_user02")]
    with pytest.raises(UserError, match="'SITTNG', which no recording contains. Did you mean 'SITTING'"):
        check_labels(recs, ["WALKING", "SITTNG"])
    check_labels(recs, ["WALKING"])
    with caplog.at_level(logging.WARNING):
        warn_shared_person(recs)
    assert "3 files name 2 people" in caplog.text and "--group-by 'file:" in caplog.text
    with pytest.raises(UserError, match="--window 8 is too short; use at least 16"):
        SequenceConfig(data=str(tmp_path), arch="cnn1d", units=[8, 8, 8, 8], window=8)


def test_a_rerun_on_changed_data_is_a_new_run(tmp_path):
    from edgekit.trainer.sequence import SequenceConfig, _run_dir, prepare

    for g in "ABCD":
        write_csv(tmp_path / f"{g}.csv", ["walk"] * 40 + ["sit"] * 40)
    cfg = SequenceConfig(data=str(tmp_path), window=8, stride=8, test_groups=["D"], val_groups=["C"])
    first = _run_dir(cfg, prepare(cfg, show=False))
    assert _run_dir(cfg, prepare(cfg, show=False)) == first  # same data: the run resumes
    write_csv(tmp_path / "E.csv", ["walk"] * 40 + ["sit"] * 40, start=7)
    assert _run_dir(cfg, prepare(cfg, show=False)) != first  # a recording more: not the old weights


def test_window_longer_than_every_recording_says_so_before_the_split(tmp_path):
    """Not "All windows come from one group (none)", which hid the cause."""
    from edgekit.trainer.sequence import SequenceConfig, prepare

    for g in "ABC":
        write_csv(tmp_path / f"{g}.csv", ["walk"] * 30)
    with pytest.raises(UserError, match=r"--window 1000 is longer than every recording \(the longest has 30 frames\)"):
        prepare(SequenceConfig(data=tmp_path, window=1000), show=False)
    write_csv(tmp_path / "D.csv", ["walk", "sit"] * 20)
    with pytest.raises(UserError, match="No window of 31 frames"):  # the runs are short, not the recordings
        prepare(SequenceConfig(data=tmp_path, window=31, include_labels=["sit"]), show=False)


def test_column_missing_from_some_files_skips_only_those(tmp_path):
    write_csv(tmp_path / "a.csv", ["walk"] * 8, extra={"c": ["1"] * 8})
    write_csv(tmp_path / "b.csv", ["walk"] * 8)
    recs, skipped = seq_data.load_folder(tmp_path, features=["a", "c"])
    assert [r.source for r in recs] == ["a.csv"]
    assert skipped[0][0] == "b.csv" and "feature column 'c' is missing" in skipped[0][1]


def test_validation_may_watch_the_test_groups_only_when_it_chooses_nothing(tmp_path):
    from edgekit.trainer.sequence import SequenceConfig

    with pytest.raises(UserError, match="both name A, B: early stopping would choose the model"):
        SequenceConfig(data=tmp_path, test_groups=["B", "A"], val_groups=["A", "B", "C"])
    # select="last" trains a fixed number of epochs: the leave-one-person-out bench watches the test person
    SequenceConfig(data=tmp_path, test_groups=["A"], val_groups=["A"], select="last")
