"""pipelines.segmentation.inputs: listing inputs and naming their outputs, so that no input steers a write outside the output
and no two inputs share a mask."""

import pytest

from pipelines.segmentation.inputs import (
    UnsafeNameError, assign_output_names, check_safe_path, common_root, list_inputs, output_uri,
)


@pytest.mark.parametrize("path", [
    "/data/img/../../../../etc/a.jpg", "a/../b.jpg", "../a.jpg", "a/./b.jpg", "a//b.jpg", "a\\..\\b.jpg",
    "a/b\x00.jpg", "", "/",
])
def test_unsafe_paths_are_refused(path):
    with pytest.raises(UnsafeNameError):
        check_safe_path(path, path)


def test_listed_traversal_gets_an_error_row_and_the_rest_go_on(tmp_path):
    good = tmp_path / "img" / "a.jpg"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{good}\n{tmp_path}/img/../../../../../../../../{tmp_path}/img/b.jpg\n"
                       f"s3://bucket/x/../../escape.jpg\n")
    items = list_inputs(str(listing))
    assert [item["error"] == "" for item in items] == [True, False, False]
    assert all("UnsafeNameError" in item["error"] and item["relative"] == "" for item in items[1:])
    assert items[0]["relative"] == "a.jpg"  # the common root of the safe URIs


def test_list_inputs_are_named_under_their_longest_common_folder(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("s3://bucket/data/VOC/JPEGImages/x.jpg\ns3://bucket/data/VOC/extra/y.png\n")
    assert [item["relative"] for item in list_inputs(str(listing))] == ["JPEGImages/x.jpg", "extra/y.png"]
    assert common_root(["s3://b/p/a.jpg", "/local/a.jpg"]) == []
    assert common_root(["/tmp/run/in/a.jpg"]) == ["file", "tmp", "run", "in"]


def test_folder_inputs_are_named_relative_to_the_folder(tmp_path):
    for name in ("a.jpg", "sub/b.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = list_inputs(str(tmp_path))
    assert [(item["relative"], item["error"]) for item in items] == [("a.jpg", ""), ("sub/b.png", "")]


def _items(*relatives):
    return [{"uri": f"s3://b/in/{r}", "relative": r, "error": ""} for r in relatives]


def test_names_differing_only_by_extension_keep_their_extension():
    named = assign_output_names(_items("a.jpg", "a.png", "b.jpg", "sub/a.jpg"))
    assert [item["name"] for item in named] == ["a.jpg.png", "a.png.png", "b.png", "sub/a.png"]
    assert all(item["error"] == "" for item in named)


def test_a_name_given_by_an_earlier_run_is_never_reused():
    named = assign_output_names(_items("a.png"), taken={"a.png": "s3://b/in/a.jpg"})
    assert named[0]["name"] == "" and "NameCollisionError" in named[0]["error"] and "a.jpg" in named[0]["error"]
    again = assign_output_names(_items("a.jpg"), taken={"a.png": "s3://b/in/a.jpg"})
    assert again[0]["name"] == "a.png" and again[0]["error"] == ""  # the same input keeps its own name


def test_a_collision_the_fallback_cannot_resolve_is_an_error_not_an_overwrite():
    named = assign_output_names(_items("a.jpg", "a.png", "a.jpg.jpg"))
    names = [item["name"] for item in named if item["name"]]
    assert len(names) == len(set(names))
    assert sum(1 for item in named if "NameCollisionError" in item["error"]) == 2


def test_output_uri_refuses_names_that_leave_the_output():
    assert output_uri("s3://b/out", "masks", "a/b.png") == "s3://b/out/masks/a/b.png"
    with pytest.raises(UnsafeNameError):
        output_uri("/out", "masks", "../../etc/x.png")


@pytest.mark.parametrize("typed", ["../photos", "../photos/", "..//photos", "../photos/.", "./../photos"])
def test_roots_as_users_type_them_are_listed_and_named(tmp_path, monkeypatch, typed):
    from deeplab_core.io import normalize_uri
    from pipelines import segment

    (tmp_path / "photos" / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.png"):
        (tmp_path / "photos" / name).write_bytes(b"x")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    args = segment.parse_args(["--input", typed, "--output", "../photos//seg/", "--checkpoint", "c"])
    assert args.input == str(tmp_path / "photos") and args.output == str(tmp_path / "photos" / "seg")
    (tmp_path / "photos" / "seg" / "masks").mkdir(parents=True)
    (tmp_path / "photos" / "seg" / "masks" / "a.png").write_bytes(b"x")  # a previous run's mask, inside --input
    items = list_inputs(args.input, exclude=args.output)
    assert [(item["relative"], item["error"]) for item in items] == [("a.jpg", ""), ("sub/b.png", "")]
    assert normalize_uri("s3://bucket//a/./b/") == "s3://bucket/a/b"
