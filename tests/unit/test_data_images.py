"""The Data agent's image-folder path: sources, archives, cleaning, splitting, profiling, the artifact."""

from __future__ import annotations

import collections
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from services.common.errors import DataError, InvalidArgument, ResourceExhausted
from services.common.image_dataset import read_dataset_table
from services.common.preprocessing import ImagePreprocessing
from services.data import sources
from services.data.demo import write_digits_folder
from services.data.images import choose_side, natural_sorted, prepare_image_folder, split_counts


def _image_bytes(seed: int, size: tuple[int, int] = (24, 24), mode: str = "L", fmt: str = "PNG") -> bytes:
    """A distinct noise image (distinct bytes per seed, so no accidental duplicates)."""
    rng = np.random.default_rng(seed)
    width, height = size
    channels = {"L": 1, "RGB": 3, "RGBA": 4}.get(mode, 3)
    array = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    if mode == "L":
        image = Image.fromarray(array[:, :, 0], "L")
    elif mode == "P":
        image = Image.fromarray(array, "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    else:
        image = Image.fromarray(array, "RGB" if mode == "RGB" else "RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _write_classes(root: Path, counts: dict[str, int], size: tuple[int, int] = (24, 24)) -> None:
    seed = 0
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            seed += 1
            (root / name / f"img{i:03d}.png").write_bytes(_image_bytes(seed * 7919, size))


def _split_of(path: Path) -> dict[str, str]:
    table = pq.read_table(path, columns=["path", "split"]).to_pydict()
    return dict(zip(table["path"], table["split"], strict=True))


# --- the digits demo -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo") / "digits"
    assert write_digits_folder(folder) == 1797
    return folder


def test_digits_demo_folder_layout_and_idempotence(digits: Path) -> None:
    assert sorted(p.name for p in digits.iterdir()) == [str(d) for d in range(10)]
    sample = next((digits / "3").glob("digit_*.png"))
    with Image.open(sample) as image:
        assert (image.mode, image.size, image.format) == ("L", (32, 32), "PNG")
        corner = image.getpixel((0, 0))
    assert corner < 30, "the background should stay dark, as in the original digits"
    before = sample.stat().st_mtime_ns
    assert write_digits_folder(digits) == 1797
    assert sample.stat().st_mtime_ns == before, "a complete folder is not rewritten"


def test_digits_report_and_artifact_round_trip(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "digits.parquet"
    report = prepare_image_folder(digits, out, seed=0)

    assert report.format == "image_folder" and report.dataset_artifact == ""
    assert list(report.classes) == [str(d) for d in range(10)]
    assert report.num_examples == sum(c.count for c in report.class_counts) == 1797 - report.num_duplicates
    sizes = report.split_sizes
    assert sizes.train + sizes.validation + sizes.test == report.num_examples
    assert 0.12 < sizes.validation / report.num_examples < 0.18
    assert 0.12 < sizes.test / report.num_examples < 0.18
    spec = ImagePreprocessing.from_json(report.preprocessing_json)
    assert (spec.mode, spec.height, spec.width) == ("L", 32, 32)
    assert 0.0 < spec.mean[0] < 1.0 and spec.std[0] >= 1e-3
    assert report.image_profile.min_width == report.image_profile.max_width == 32
    assert dict(report.image_profile.modes) == {"L": report.num_examples}
    assert dict(report.image_profile.formats) == {"PNG": report.num_examples}

    dataset = read_dataset_table(out)
    assert dataset.format == "image_folder" and dataset.classes == list(report.classes)
    assert dataset.preprocessing == spec
    rows = dataset.table.to_pylist()
    assert len(rows) == report.num_examples
    per_split = collections.defaultdict(set)
    for row in rows:
        per_split[row["split"]].add(row["label"])
    assert set(per_split) == {"train", "validation", "test"}
    assert all(labels == set(report.classes) for labels in per_split.values()), "every class in every split"
    for row in rows[::97]:
        assert row["image"] == (digits / row["path"]).read_bytes(), "rows carry the original bytes"
        assert row["path"].split("/")[0] == row["label"]
    metadata = pq.read_schema(out).metadata
    assert json.loads(metadata[b"traineragent.classes"]) == list(report.classes)
    assert json.loads(metadata[b"traineragent.format"]) == "image_folder"

    again = prepare_image_folder(digits, tmp_path / "again.parquet", seed=0)
    assert again.preprocessing_json == report.preprocessing_json
    assert out.read_bytes() == (tmp_path / "again.parquet").read_bytes(), "same folder, same content hash"
    prepare_image_folder(digits, tmp_path / "other.parquet", seed=1)
    assert _split_of(out) != _split_of(tmp_path / "other.parquet"), "the seed chooses the split"
    assert report.seconds > 0


# --- mixed images ----------------------------------------------------------------------------------


def test_mixed_formats_modes_and_sizes_choose_rgb(tmp_path: Path) -> None:
    variants = [("PNG", "RGB", (300, 200)), ("JPEG", "RGB", (64, 48)), ("PNG", "L", (20, 20)),
                ("JPEG", "L", (120, 90)), ("PNG", "RGBA", (40, 56)), ("PNG", "P", (96, 96))]
    for offset, label in enumerate(("cats", "dogs")):
        (tmp_path / label).mkdir()
        for i, (fmt, mode, size) in enumerate(variants):
            suffix = ".jpg" if fmt == "JPEG" else ".png"
            seed = 1000 * offset + i
            (tmp_path / label / f"{mode}{i}{suffix}").write_bytes(_image_bytes(seed, size, mode, fmt))
    report = prepare_image_folder(tmp_path, tmp_path / "out.parquet")

    spec = ImagePreprocessing.from_json(report.preprocessing_json)
    assert spec.mode == "RGB" and len(spec.mean) == len(spec.std) == 3
    assert spec.height == spec.width and 16 <= spec.height <= 64 and spec.height % 4 == 0
    profile = report.image_profile
    assert (profile.min_width, profile.max_width) == (20, 300)
    assert (profile.min_height, profile.max_height) == (20, 200)
    assert set(profile.modes) == {"RGB", "L", "RGBA", "P"} and set(profile.formats) == {"PNG", "JPEG"}
    assert report.num_examples == 12 and report.num_dropped == 0


def test_choose_side_and_split_counts_and_natural_order() -> None:
    assert choose_side([(28, 28)] * 5) == 28
    assert choose_side([(8, 8)] * 3) == 16
    assert choose_side([(300, 200)] * 3) == 64
    assert choose_side([(50, 50), (50, 50), (300, 50)]) == 52  # not all small: rounded to a multiple of 4
    assert split_counts(3, 0.15, 0.15) == (1, 1, 1)
    assert split_counts(4, 0.15, 0.15) == (2, 1, 1)
    assert split_counts(100, 0.15, 0.15) == (70, 15, 15)
    assert natural_sorted(["10", "2", "1", "b", "A"]) == ["1", "2", "10", "A", "b"]


# --- bad folders -----------------------------------------------------------------------------------


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(DataError, match="empty"):
        prepare_image_folder(tmp_path, tmp_path / "out.parquet")


def test_files_but_no_class_folders(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(_image_bytes(i))
    with pytest.raises(DataError, match="no class sub-folders") as info:
        prepare_image_folder(tmp_path, tmp_path / "out.parquet")
    assert "<root>/<class name>/<image files>" in info.value.message


def test_single_class_folder(tmp_path: Path) -> None:
    _write_classes(tmp_path, {"only": 5})
    with pytest.raises(DataError, match="at least 2 classes"):
        prepare_image_folder(tmp_path, tmp_path / "out.parquet")


def test_only_non_image_files(tmp_path: Path) -> None:
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.txt").write_text("not a picture")
        (tmp_path / name / "b.csv").write_text("x,y\n1,2\n")
        (tmp_path / name / "fake.png").write_text("text with a png name")
    with pytest.raises(DataError) as info:
        prepare_image_folder(tmp_path, tmp_path / "out.parquet")
    message = info.value.message
    assert "found 6 files, none is a PNG/JPEG image" in message and "cats/a.txt" in message


def test_class_with_two_images_is_named(tmp_path: Path) -> None:
    _write_classes(tmp_path, {"plenty": 10, "scarce": 2})
    with pytest.raises(DataError) as info:
        prepare_image_folder(tmp_path, tmp_path / "out.parquet")
    message = info.value.message
    assert "scarce (2 usable images)" in message and "plenty" not in message
    assert "at least 3 images per class" in message and "remove the folder" in message


def test_truncated_and_non_image_files_are_skipped_with_warnings(tmp_path: Path) -> None:
    _write_classes(tmp_path, {"a": 4, "b": 4}, size=(64, 64))
    whole = (tmp_path / "a" / "img000.png").read_bytes()
    (tmp_path / "a" / "cut.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "b" / "notes.txt").write_text("hello")
    (tmp_path / "b" / "nested").mkdir()
    (tmp_path / "b" / "nested" / "deep.png").write_bytes(_image_bytes(4242))
    (tmp_path / "b" / "._deep.png").write_bytes(b"macOS resource fork")
    report = prepare_image_folder(tmp_path, tmp_path / "out.parquet")

    assert report.num_examples == 9 and report.num_dropped == 2
    assert [c.count for c in report.class_counts] == [4, 5]
    warnings = "\n".join(report.warnings)
    assert "a/cut.png" in warnings and "b/notes.txt" in warnings and "._deep" not in warnings
    assert "b/nested/deep.png" in _split_of(tmp_path / "out.parquet")


def test_hidden_junk_and_escaping_links_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    _write_classes(root, {"a": 3, "b": 3})
    _write_classes(root / ".cache", {"x": 3})
    _write_classes(root / "__MACOSX", {"y": 3})
    (tmp_path / "outside.png").write_bytes(_image_bytes(31337))
    (root / "a" / "link.png").symlink_to(tmp_path / "outside.png")
    report = prepare_image_folder(root, tmp_path / "out.parquet")
    assert list(report.classes) == ["a", "b"] and report.num_examples == 6 and report.num_dropped == 1
    assert any("a/link.png" in line and "outside" in line for line in report.warnings)


def test_many_bad_files_are_listed_up_to_a_cap(tmp_path: Path) -> None:
    _write_classes(tmp_path, {"a": 3, "b": 3})
    for i in range(30):
        (tmp_path / "a" / f"junk{i:02d}.txt").write_text(str(i))
    report = prepare_image_folder(tmp_path, tmp_path / "out.parquet")
    assert report.num_dropped == 30
    assert len(report.warnings) == 21 and report.warnings[-1].startswith("... and 10 more")


def test_duplicates_kept_once_and_conflicting_labels_dropped(tmp_path: Path) -> None:
    _write_classes(tmp_path, {"cat": 5, "dog": 5})
    same = (tmp_path / "cat" / "img000.png").read_bytes()
    (tmp_path / "cat" / "copy.png").write_bytes(same)
    contested = _image_bytes(99_999)
    (tmp_path / "cat" / "contested.png").write_bytes(contested)
    (tmp_path / "dog" / "contested.png").write_bytes(contested)
    report = prepare_image_folder(tmp_path, tmp_path / "out.parquet")

    assert report.num_duplicates == 3 and report.num_examples == 10
    paths = _split_of(tmp_path / "out.parquet")
    assert not any("contested" in path for path in paths)
    assert ("cat/img000.png" in paths) != ("cat/copy.png" in paths)
    warnings = "\n".join(report.warnings)
    assert "conflicting labels" in warnings and "cat, dog" in warnings


def test_split_puts_every_class_in_every_split_with_three_images(tmp_path: Path) -> None:
    _write_classes(tmp_path, {"x": 3, "y": 3, "z": 40})
    report = prepare_image_folder(tmp_path, tmp_path / "out.parquet", seed=5)
    rows = read_dataset_table(tmp_path / "out.parquet").table.to_pylist()
    seen = collections.Counter((row["label"], row["split"]) for row in rows)
    for label in ("x", "y"):
        assert [seen[(label, split)] for split in ("train", "validation", "test")] == [1, 1, 1]
    assert report.split_sizes.validation == 1 + 1 + 6


# --- server paths ----------------------------------------------------------------------------------


def test_server_paths(tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    (root / "data").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")

    assert sources.resolve_server_path(str(root / "data"), [root]) == (root / "data").resolve()
    with pytest.raises(InvalidArgument, match="TRAINERAGENT_DATA_ROOTS"):
        sources.resolve_server_path(str(root / "data"), [])
    with pytest.raises(InvalidArgument) as info:
        sources.resolve_server_path(str(tmp_path / "secret"), [root])
    assert str(root) in info.value.message
    with pytest.raises(InvalidArgument):
        sources.resolve_server_path(str(root / "escape"), [root])
    with pytest.raises(InvalidArgument):
        sources.resolve_server_path(str(root / ".." / "secret"), [root])
    with pytest.raises(InvalidArgument, match="does not exist on the data service's host"):
        sources.resolve_server_path(str(root / "missing"), [root])


# --- archives --------------------------------------------------------------------------------------


def test_archive_kind() -> None:
    names = ("a.zip", "a.TAR", "a.tar.gz", "a.tgz", "a.tar.bz2", "a.tar.xz")
    kinds = ["zip", "tar", "tar.gz", "tar.gz", "tar.bz2", "tar.xz"]
    assert [sources.archive_kind(name) for name in names] == kinds
    with pytest.raises(InvalidArgument, match=r"\.zip, \.tar"):
        sources.archive_kind("data.rar")


def _dataset_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "src" / "digits"
    _write_classes(folder, {"0": 3, "1": 3})
    return folder


def _tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def _zip(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, arcname=f"{folder.name}/{path.relative_to(folder).as_posix()}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_extracts_to_the_dataset_root(tmp_path: Path, kind: str) -> None:
    folder = _dataset_folder(tmp_path)
    if kind == "zip":
        archive = _zip(folder, tmp_path / "data.zip", {"__MACOSX/digits/0/._img000.png": b"junk",
                                                       "digits/.DS_Store": b"junk"})
    else:
        archive = _tar_gz(folder, tmp_path / "data.tar.gz")
    assert sources.archive_kind(archive.name) == kind
    assert sources.inspect_archive(archive, kind) == 6 + (2 if kind == "zip" else 0)
    extracted = sources.extract_archive(archive, kind, tmp_path / "out")
    root = sources.find_dataset_root(extracted)
    assert root == tmp_path / "out" / "digits"
    assert not (tmp_path / "out" / "__MACOSX").exists() and not (root / ".DS_Store").exists()
    assert (root / "1" / "img002.png").read_bytes() == (folder / "1" / "img002.png").read_bytes()
    report = prepare_image_folder(root, tmp_path / "out.parquet")
    assert list(report.classes) == ["0", "1"]


def test_find_dataset_root_stops_at_a_lone_class_folder(tmp_path: Path) -> None:
    _write_classes(tmp_path / "wrap" / "data", {"only": 3})
    assert sources.find_dataset_root(tmp_path / "wrap") == tmp_path / "wrap" / "data"


@pytest.mark.parametrize("kind", ["zip", "tar.gz", "tar"])
def test_truncated_archive_fails_at_inspect(tmp_path: Path, kind: str) -> None:
    folder = _dataset_folder(tmp_path)
    if kind == "zip":
        archive = _zip(folder, tmp_path / "data.zip")
    else:
        archive = tmp_path / f"data.{kind}"
        with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as tar:
            tar.add(folder, arcname=folder.name)
    data = archive.read_bytes()
    content = len(data.rstrip(b"\0"))  # a plain tar ends in zero padding; cutting only that loses nothing
    archive.write_bytes(data[: content * 2 // 3])
    with pytest.raises(InvalidArgument, match="truncated or corrupt"):
        sources.inspect_archive(archive, kind)


def test_tar_cut_between_members_fails_at_inspect(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("a/1.png", "b/2.png"):
            info = tarfile.TarInfo(name)
            info.size = 512
            tar.addfile(info, io.BytesIO(b"x" * 512))
    archive = tmp_path / "cut.tar"
    archive.write_bytes(buffer.getvalue()[: 2 * 1024])  # both members whole, no end-of-archive marker
    with pytest.raises(InvalidArgument, match="truncated or corrupt"):
        sources.inspect_archive(archive, "tar")


def test_unsafe_members_are_not_extracted(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        members = (("data/a/1.png", b"one"), ("../evil.txt", b"evil"), ("/tmp/abs-evil.txt", b"evil"))
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("data/a/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        inside = tarfile.TarInfo("data/a/copy.png")
        inside.type, inside.linkname = tarfile.SYMTYPE, "1.png"
        tar.addfile(inside)
        device = tarfile.TarInfo("data/a/null")
        device.type = tarfile.CHRTYPE
        tar.addfile(device)
    dest = tmp_path / "deep" / "out"
    sources.extract_archive(archive, "tar.gz", dest)
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in (dest / "data" / "a").iterdir()) == ["1.png", "copy.png"]
    assert not (dest / "data" / "a" / "copy.png").is_symlink()
    assert (dest / "data" / "a" / "copy.png").read_bytes() == b"one"

    zipped = tmp_path / "evil.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("data/ok.txt", b"ok")
        zf.writestr("../evil.txt", b"evil")
    sources.extract_archive(zipped, "zip", tmp_path / "zout")
    assert (tmp_path / "zout" / "data" / "ok.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_extraction_limits(tmp_path: Path) -> None:
    archive = _tar_gz(_dataset_folder(tmp_path), tmp_path / "data.tar.gz")
    with pytest.raises(ResourceExhausted, match="more than 4 files"):
        sources.extract_archive(archive, "tar.gz", tmp_path / "out1", max_files=4)
    with pytest.raises(ResourceExhausted, match="GiB"):
        sources.extract_archive(archive, "tar.gz", tmp_path / "out2", max_total_bytes=1000)
