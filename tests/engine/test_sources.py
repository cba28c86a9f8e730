"""Listing sources from file:// and s3:// (moto) storage."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_searchapi.engine.listing import glob_matcher, list_images, shard_images
from airflow_provider_searchapi.engine.sources import images_from_paths, images_from_urls, stable_uri
from tests.conftest import make_jpeg


@pytest.mark.parametrize(
    "pattern, path, matches",
    [
        ("*.jpg", "a.jpg", True),
        ("*.jpg", "sub/a.jpg", False),
        ("**/*.jpg", "a.jpg", True),
        ("**/*.jpg", "x/y/a.jpg", True),
        ("**/*.jpg", "x/y/a.png", False),
        ("img-??.png", "img-01.png", True),
        ("img-??.png", "img-1.png", False),
        ("[ab]*.gif", "b1.gif", True),
        ("[!ab]*.gif", "b1.gif", False),
        ("2024/**", "2024/01/x.jpg", True),
        ("a+b (1).jpg", "a+b (1).jpg", True),
        ("**.jpg", "x/a.jpg", True),
    ],
)
def test_glob_patterns(pattern, path, matches):
    assert bool(glob_matcher(pattern).match(path)) is matches  # what list_images matches with


@pytest.fixture
def tree(tmp_path):
    for relative in ["a.jpg", "b.png", "sub/c.jpg", "sub/deeper/d.jpg", "sub/notes.txt", "odd name #1.jpg"]:
        path = tmp_path / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make_jpeg(len(relative)))
    return tmp_path / "images"


def _names(sources):
    return [s.uri.split("/images/", 1)[1] for s in sources]


def test_folder_lists_every_file_below_it(tree):
    names = sorted(_names(list_images(f"file://{tree}/")))  # a local folder comes in the OS's order
    assert names == ["a.jpg", "b.png", "odd name #1.jpg", "sub/c.jpg", "sub/deeper/d.jpg", "sub/notes.txt"]


def test_globs_filter_at_any_depth(tree):
    assert sorted(_names(list_images(f"file://{tree}/**/*.jpg"))) == [
        "a.jpg",
        "odd name #1.jpg",
        "sub/c.jpg",
        "sub/deeper/d.jpg",
    ]
    assert sorted(_names(list_images(f"file://{tree}/**.jpg"))) == sorted(
        _names(list_images(f"file://{tree}/**/*.jpg"))
    )
    assert sorted(_names(list_images(f"file://{tree}/*.jpg"))) == ["a.jpg", "odd name #1.jpg"]
    assert sorted(_names(list_images(f"file://{tree}/sub/*"))) == ["sub/c.jpg", "sub/notes.txt"]


def test_single_file_with_size_and_mtime(tree):
    (source,) = list(list_images(f"file://{tree}/a.jpg"))
    assert source.uri == f"file://{tree}/a.jpg"
    assert source.size == (tree / "a.jpg").stat().st_size
    assert source.mtime and source.mtime.endswith("+00:00")


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        list(list_images(f"file://{tmp_path}/nothing-here/"))


def test_listing_is_lazy(tree):
    iterator = list_images(f"file://{tree}/")
    assert next(iterator).uri.startswith(f"file://{tree}/")  # nothing else needed to get the first one


def test_s3_listing_through_an_aws_connection(bucket, s3_conn_id):
    root = ObjectStoragePath(f"{bucket}/images/", conn_id=s3_conn_id)
    for name in ["x/1.jpg", "x/2.jpg", "y/3.png", "top.jpg"]:
        (root / name).write_bytes(make_jpeg(len(name)))
    sources = list(list_images(f"{bucket}/images/**/*.jpg", conn_id=s3_conn_id))
    assert [s.uri for s in sources] == [
        f"{bucket}/images/top.jpg",
        f"{bucket}/images/x/1.jpg",
        f"{bucket}/images/x/2.jpg",
    ]
    assert all(s.etag and s.size and s.mtime for s in sources)
    assert "s3_test" not in "".join(s.uri for s in sources)  # stable URIs hold no connection id
    assert sources[0].path.read_bytes() == make_jpeg(len("top.jpg"))
    # Listed sources carry no path object until asked; the one made then names the same file, as a
    # path joined onto the root (what listings used to build) does.
    assert all(s.uri == stable_uri(s.path) == stable_uri(root / s.key.split("/images/", 1)[1]) for s in sources)
    shard = [s.uri for s in sources]
    assert [s.uri for s in images_from_paths(shard, conn_id=s3_conn_id)] == shard
    fs, key = sources[1].location
    assert fs.cat_file(key) == sources[1].path.read_bytes() == make_jpeg(len("x/1.jpg"))


def test_local_listing_names_and_locations_agree(tree):
    sources = list(list_images(f"file://{tree}/**"))
    assert sources and all(s.uri == stable_uri(s.path) for s in sources)
    for source in sources:
        fs, key = source.location
        assert fs.cat_file(key) == Path(key).read_bytes() == source.path.read_bytes()


def test_a_listings_folder_is_resolved_once_not_for_every_file_read(tree, monkeypatch):
    import os

    from airflow_provider_searchapi.engine.sources import read_image

    resolved: list[str] = []
    realpath = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda path: resolved.append(path) or realpath(path))
    sources = list(list_images(f"file://{tree}/"))
    assert all(read_image(source)[0] == Path(source.location[1]).read_bytes() for source in sources)
    assert resolved.count(str(tree)) == 1 and len(resolved) == len(sources) + 1  # the folder, then each file


def test_stable_uri_drops_the_connection_id(bucket, s3_conn_id):
    path = ObjectStoragePath(f"{bucket}/a/b.jpg", conn_id=s3_conn_id)
    assert "s3_test@" in str(path)
    assert stable_uri(path) == f"{bucket}/a/b.jpg"


def test_shards_cover_every_image_once_and_balance(tree):
    shards = shard_images(f"file://{tree}/", 4)
    flat = [uri for shard in shards for uri in shard]
    assert sorted(flat) == sorted(s.uri for s in list_images(f"file://{tree}/"))
    assert len(flat) == len(set(flat)) == 6
    assert [len(s) for s in shards] == [2, 2, 1, 1]
    assert len(shard_images(f"file://{tree}/", 10)) == 6  # no empty shards
    assert sum(map(len, shard_images(f"file://{tree}/", 2, max_images=3))) == 3
    with pytest.raises(ValueError):
        shard_images(f"file://{tree}/", 0)


def test_shard_paths_read_back(tree):
    (shard,) = shard_images(f"file://{tree}/*.png", 1)
    (source,) = list(images_from_paths(shard))
    assert source.uri == shard[0] and source.path.read_bytes() == (tree / "b.png").read_bytes()


ODD_NAMES = ["a.jpg", "odd name #1.jpg", "100%.jpg", "q?x=1&y.jpg", "семь/日本.jpg", "x//double.jpg", "./dot.jpg"]


def _as_path_objects(urls, conn_id=None):
    """What a shard's sources were when each path got its own ObjectStoragePath: the reference."""
    paths = [ObjectStoragePath(url, conn_id=conn_id) for url in urls]
    return [(stable_uri(path), path.path, path.read_bytes()) for path in paths]


def _described(sources):
    return [(s.uri, s.location[1], s.location[0].cat_file(s.location[1])) for s in sources]


def test_shard_paths_name_and_read_what_path_objects_do_locally(tmp_path):
    urls = []
    for index, name in enumerate(ODD_NAMES):
        file = tmp_path / "images" / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(make_jpeg(index))
        urls.append(f"file://{tmp_path}/images/{name}")
    sources = list(images_from_paths(urls))
    assert [content for *_, content in _described(sources)] == [content for *_, content in _as_path_objects(urls)]
    assert all(s.path.read_bytes() == Path(s.location[1]).read_bytes() for s in sources)
    assert len({id(s.root) for s in sources}) == 1  # one path object for the store, not one per file
    # Named and looked up like a listing (x//double.jpg and ./dot.jpg too): the same URI, size and time.
    listed = {s.uri: s for s in list_images(f"file://{tmp_path}/images/")}
    assert sorted(s.uri for s in sources) == sorted(listed)
    assert all(s.size == Path(s.location[1]).stat().st_size and s.mtime for s in sources)
    assert [(s.size, s.mtime) for s in sources] == [(listed[s.uri].size, listed[s.uri].mtime) for s in sources]
    (missing,) = images_from_paths([f"file://{tmp_path}/gone.jpg"])
    assert missing.uri == f"file://{tmp_path}/gone.jpg" and missing.size is None


def test_shard_paths_that_fsspec_does_not_strip_get_a_path_object_each(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(make_jpeg(1))
    urls = [f"FILE://{image}", str(image)]  # an upper-case scheme, a bare path
    assert _described(images_from_paths(urls)) == _as_path_objects(urls)


def test_shard_paths_name_and_read_what_path_objects_do_in_s3(bucket, s3_conn_id):
    urls = []
    for index, name in enumerate(ODD_NAMES[:-1]):  # S3 keeps "./" in keys; moto and s3fs disagree on it
        ObjectStoragePath(f"{bucket}/images/{name}", conn_id=s3_conn_id).write_bytes(make_jpeg(index))
        urls.append(f"{bucket}/images/{name}")
    sources = list(images_from_paths(urls, conn_id=s3_conn_id))
    assert _described(sources) == _as_path_objects(urls, s3_conn_id)
    assert [s.uri for s in sources] == urls
    assert all(s.size is None for s in sources)  # no request per object before reading it


def test_urls_are_sources_as_they_are():
    (source,) = list(images_from_urls(["https://example.com/cat.jpg"]))
    assert source.is_url and source.uri == "https://example.com/cat.jpg"


def test_a_double_star_inside_a_name_is_refused_with_the_source(tree):
    with pytest.raises(ValueError, match=r"source .*x\*\*y\.jpg"):
        list(list_images(f"file://{tree}/x**y.jpg"))
