from __future__ import annotations

import io
import stat
import zipfile

import numpy as np
import pytest

from stratus.errors import InvalidInput
from stratus.training.datasets import builtin_npz, parse, profile_of, schema_of


def csv_bytes(text: str) -> bytes:
    return text.strip().encode() + b"\n"


def test_csv_with_target_infers_task_schema_and_profile() -> None:
    data = csv_bytes("a,b,label\n1,2,cat\n3,4,dog\n5,6,cat\n7,8,dog")
    parsed = parse("csv", data, target="label")
    assert parsed.task == "classification" and parsed.classes == ["cat", "dog"]
    assert parsed.X.shape == (4, 2) and parsed.y.tolist() == [0, 1, 0, 1]  # type: ignore[union-attr]
    schema, profile = schema_of(parsed), profile_of(parsed)
    assert schema["features"] == [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"}]
    a = profile["features"]["a"]
    assert (a["count"], a["mean"], a["min"], a["max"]) == (4, 4.0, 1.0, 7.0)
    assert set(a["quantiles"]) == {"p05", "p25", "p50", "p75", "p95"} and sum(a["histogram"]["counts"]) == 4
    assert profile["class_distribution"] == {"cat": 2, "dog": 2}
    regression = parse("csv", csv_bytes("x,y\n1,0.5\n2,1.5\n3,2.25"), target="y")
    assert regression.task == "regression"
    unsupervised = parse("csv", csv_bytes("x,y\n1,0.5\n2,1.5"), target=None)
    assert unsupervised.task == "unsupervised" and unsupervised.y is None


@pytest.mark.parametrize(
    ("text", "target", "needle"),
    [
        ("", "y", "empty"),
        ("a,y", "y", "empty"),
        ("a,b,y\n1,2,3\n4,5", "y", "row 3 has 2 fields"),
        ("a,b\n1,2", "label", "target column 'label' does not exist"),
        ("a,y\n1,0\nnan,1", "y", "missing value"),
        ("a,y\n1,0\ninf,1", "y", "infinite"),
        ("a,a,y\n1,2,0", "y", "each name once"),
    ],
)
def test_bad_csv_is_refused_with_the_reason(text: str, target: str, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        parse("csv", text.encode(), target=target)


def test_missing_values_can_be_imputed_later() -> None:
    parsed = parse("csv", csv_bytes("a,y\n1,0\n,1\n3,0"), target="y", missing="impute")
    assert np.isnan(parsed.X[1, 0])
    assert profile_of(parsed)["features"]["a"]["missing"] == 1


def test_npz_and_builtins() -> None:
    parsed = parse("npz", builtin_npz("digits"))
    assert parsed.image_shape == (1, 8, 8) and parsed.rows == 1797 and len(parsed.classes) == 10
    iris = parse("npz", builtin_npz("iris"))
    assert iris.feature_names[0].startswith("sepal length") and iris.task == "classification"
    diabetes = parse("npz", builtin_npz("diabetes"), task="regression")
    assert diabetes.task == "regression"
    buffer = io.BytesIO()
    np.savez(buffer, X=np.array([{"a": 1}], dtype=object), y=np.array([1]))
    with pytest.raises(InvalidInput, match="pickle"):
        parse("npz", buffer.getvalue())
    buffer = io.BytesIO()
    np.savez(buffer, X=np.ones((3, 2)), y=np.ones(2))
    with pytest.raises(InvalidInput, match="one value per row"):
        parse("npz", buffer.getvalue())


def png(value: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def zip_of(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_image_folder_zip() -> None:
    data = zip_of({"digits/zero/a.png": png(0), "digits/zero/b.png": png(10), "digits/one/c.png": png(200)})
    parsed = parse("images", data)
    assert parsed.classes == ["one", "zero"] and parsed.image_shape == (1, 8, 8)
    assert sorted(parsed.y.tolist()) == [0, 1, 1]  # type: ignore[union-attr]
    assert schema_of(parsed)["image"] == {"channels": 1, "height": 8, "width": 8}


@pytest.mark.parametrize(
    ("entries", "symlink", "needle"),
    [
        ({"../evil/a.png": b"x", "b/c.png": b"y"}, None, "zip-slip"),
        ({"/abs/a.png": b"x"}, None, "absolute path"),
        ({"a/x.png": b"x"}, "a/link.png", "symbolic link"),
        ({"a/x.png": b"not an image", "b/y.png": b"nor this"}, None, "does not decode"),
        ({"a/x.txt": b"text"}, None, "not a PNG or JPEG"),
    ],
)
def test_unsafe_or_broken_archives_are_refused(entries: dict[str, bytes], symlink: str | None, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        parse("images", zip_of(entries, symlink))


def test_zip_bomb_is_refused() -> None:
    with pytest.raises(InvalidInput, match="zip bomb"):
        parse("images", zip_of({"a/big.png": b"\0" * (64 * 1024 * 1024)}))


def test_images_of_other_sizes_are_resized_to_the_common_size() -> None:
    from PIL import Image

    big = io.BytesIO()
    Image.fromarray(np.full((16, 16), 100, dtype=np.uint8)).save(big, format="PNG")
    data = zip_of({"a/1.png": png(0), "a/2.png": png(0), "b/3.png": png(50), "b/4.png": big.getvalue()})
    parsed = parse("images", data)
    assert parsed.image_shape == (1, 8, 8) and parsed.resized == 1
    assert schema_of(parsed)["image"]["resized"] == 1


def test_categorical_columns_are_kept_as_strings() -> None:
    parsed = parse("csv", csv_bytes("x,colour,y\n1,red,0\n2,blue,1\n3,red,0\n4,,1"), target="y")
    assert parsed.feature_kinds == ["numeric", "categorical"] and parsed.categorical_names == ["colour"]
    assert parsed.categorical[:, 0].tolist() == ["red", "blue", "red", ""]  # type: ignore[index]
    top = profile_of(parsed)["features"]["colour"]
    assert top["distinct"] == 3 and top["top"]["red"] == 2 and top["missing"] == 1


def test_free_text_columns_are_kept_for_the_text_classifier() -> None:
    text = "review,y\n" + "\n".join(f"free text number {i},{i % 2}" for i in range(40))
    parsed = parse("csv", text.encode(), target="y")
    assert parsed.feature_kinds == ["text"] and parsed.text_names == ["review"]
    assert profile_of(parsed)["features"]["review"]["words"]["mean"] == 4.0
