"""The array-level science of the extend and similar stages (``core/extend_types``,
``core/similar``) and their file helpers, on NumPy arrays with no run directory."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pandas as pd
import pytest

from skymorph.core.extend import ExtendResult
from skymorph.core.extend_types import OOD, final_types, type_columns, type_summary
from skymorph.core.similar import build_index, neighbour_table, stored_index
from skymorph.io.runfiles import file_digest, safe_file_name


@pytest.mark.parametrize("module", ["skymorph.core.extend_types", "skymorph.core.similar"])
def test_the_examples_in_the_docstrings_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5
    assert result.failed == 0


def _result(predicted, ood, nonfinite, classes=("A", "B")):
    n = len(predicted)
    proba = np.array([[1.0 if c == p else 0.0 for c in classes] for p in predicted])
    return ExtendResult(classes=list(classes), proba=proba, predicted=np.array(predicted, dtype=object),
                        p_predicted=np.full(n, 0.9), confident=np.ones(n, bool), ood=np.array(ood, bool),
                        ood_distance=np.zeros(n), ood_threshold=1.0, temperature=1.0,
                        cv={"accuracy": 0.5, "balanced_accuracy": 0.5, "ece": 0.1},
                        nonfinite=np.array(nonfinite, bool))


# rows: experts-typed, extended, extended out of distribution, no finite input, taught
PREDICTED = ["A", "B", "B", "", "A"]
TYPED = np.array([1, 0, 0, 0, 0], bool)
MTYPE = np.array(["B", "", "", "", ""])
TAUGHT = np.array(["", "", "", "", "B"])


@pytest.mark.parametrize("ood_final, out, no_input", [("ood", OOD, OOD), ("fallback", "UNC", "UNC"),
                                                      ("predicted", "B", OOD)])
def test_final_types_experts_first_taught_over_all_and_ood_by_setting(ood_final, out, no_input):
    result = _result(PREDICTED, [0, 0, 1, 1, 0], [0, 0, 0, 1, 0])
    f = final_types(result, typed=TYPED, mtype=MTYPE, taught=TAUGHT, ood_final=ood_final, fallback="UNC")
    assert f.final.tolist() == ["B", "B", out, no_input, "B"]
    assert f.source.tolist() == ["experts", "extended", "ood", "ood", "taught"]
    assert f.extended.tolist() == [False, True, True, True, False]
    summary, counts = type_summary(result, f, learn=TYPED, types=["A", "B", "UNC"], ood_final=ood_final,
                                   cv_folds=5)
    assert (summary["n_experts"], summary["n_taught"], summary["n_extended"]) == (1, 1, 3)
    assert (summary["n_extended_ood"], summary["n_nonfinite"], summary["n_extended_confident"]) == (2, 1, 1)
    assert counts["B"] == {"experts": 1, "extended": 1, "ood": int(out == "B"), "taught": 1}
    assert (OOD in counts) == (ood_final == "ood")


def test_type_columns_nan_for_no_input_and_zero_for_an_unlearnt_type():
    result = _result(["A", ""], [0, 1], [0, 1])
    f = final_types(result, typed=np.zeros(2, bool), mtype=np.array(["", ""]), taught=np.array(["", ""]),
                    ood_final="ood", fallback="UNC")
    cols = type_columns(result, f, types=["A", "B", "UNC"])
    assert list(cols)[:3] == ["p_A", "p_B", "p_UNC"]
    assert cols["p_A"][0] == 1.0 and np.isnan(cols["p_A"][1]) and cols["p_UNC"][0] == 0.0
    assert cols["ml_confident"].tolist() == [True, False]  # out of distribution is never confident
    assert cols["morph_type_final"].tolist() == ["A", OOD]


def test_neighbour_table_gives_a_new_image_no_rank_zero_line():
    table = pd.DataFrame({"id": [10, 11, 12], "cluster": [1, 2, 3]})
    found, dist = np.array([[1, 2], [0, -1]]), np.array([[0.1, 0.2], [0.3, np.inf]])
    t = neighbour_table(found, dist, names=["10", "new.png"], rows=[0, -1], table=table, columns=["cluster"])
    assert t.columns.tolist() == ["query", "rank", "id", "row", "distance", "cluster"]
    assert t["rank"].tolist() == [0, 1, 2, 1]
    assert t["id"].tolist() == ["10", "11", "12", "10"]


def test_stored_index_is_rebuilt_for_another_key_or_a_damaged_file(tmp_path):
    x = np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32)
    build_index(x, tmp_path, key="k1", metric="cosine", seed=0)
    assert stored_index(tmp_path, key="k1") is not None
    assert stored_index(tmp_path, key="k2") is None
    (tmp_path / "index.json").write_text("{not json")
    assert stored_index(tmp_path, key="k1") is None


def test_file_digest_and_safe_file_name(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * (3 << 20))
    assert len(file_digest(path)) == 16 and file_digest(path) != file_digest(__file__)
    assert safe_file_name("gal/1 2?.fits") == "gal_1_2_.fits"
    assert safe_file_name("///") == "_" and safe_file_name("") == "query"
    assert len(safe_file_name("x" * 200)) == 80
