"""Bad input ends in INVALID_ARGUMENT (found at submission) or a FAILED job naming the problem; the stack stays up."""

from __future__ import annotations

import io
import tarfile

import grpc
import pytest

from tests.integration.helpers import digits_images, encode, follow
from traineragent.v1 import common_pb2

pytestmark = pytest.mark.integration
REQUEST = "Classify these images, accuracy at least 90%"


def _code(call) -> tuple[grpc.StatusCode, str]:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def _stack_serves(stack) -> None:  # noqa: ANN001
    assert stack.healthy(), "a service stopped serving after bad input"


def _write_folder(root, spec: dict[str, int], image_maker=None) -> None:  # noqa: ANN001
    images = digits_images(24)
    for index, (name, count) in enumerate(spec.items()):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            (folder / f"{i}.png").write_bytes(encode(images[index * 50 + i][1], "PNG", "L"))


def test_server_path_that_does_not_exist(gateway, stack, data_root):
    code, message = _code(lambda: gateway.submit(
        REQUEST, common_pb2.DatasetRef(server_path=str(data_root / "no-such-folder"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not exist" in message
    _stack_serves(stack)


def test_server_path_outside_the_allowed_roots(gateway, stack, tmp_path):
    _write_folder(tmp_path / "outside", {"a": 3, "b": 3})
    code, message = _code(lambda: gateway.submit(REQUEST, common_pb2.DatasetRef(server_path=str(tmp_path / "outside"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "allowed" in message and "TRAINERAGENT_DATA_ROOTS" in message
    _stack_serves(stack)


def test_empty_folder(gateway, stack, data_root):
    (data_root / "empty").mkdir()
    code, message = _code(lambda: gateway.submit(REQUEST, common_pb2.DatasetRef(server_path=str(data_root / "empty"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in message
    _stack_serves(stack)


def test_empty_archive_upload(gateway, stack, tmp_path):
    archive = tmp_path / "empty.tar.gz"
    with tarfile.open(archive, "w:gz"):
        pass
    code, message = _code(lambda: gateway.upload(archive))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no files" in message
    _stack_serves(stack)


def test_truncated_archive(gateway, stack, tmp_path):
    folder = tmp_path / "data"
    _write_folder(folder, {"a": 20, "b": 20})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname="data")
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    code, message = _code(lambda: gateway.upload(archive))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated or corrupt" in message
    _stack_serves(stack)


def test_files_that_are_not_images(gateway, stack, tmp_path):
    folder = tmp_path / "notimages"
    for name in ("cats", "dogs"):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            (folder / name / f"{i}.png").write_text("this is text, not a picture\n")
    upload = gateway.upload(folder)
    job = gateway.submit(REQUEST, common_pb2.DatasetRef(upload_id=upload.upload_id))
    final, _ = follow(gateway, job.job_id, timeout_s=120)
    assert final.state == common_pb2.JOB_STATE_FAILED
    assert "image" in final.error.lower() and "none" in final.error.lower(), final.error
    _stack_serves(stack)


def test_class_with_fewer_than_three_images(gateway, stack, data_root):
    folder = data_root / "tiny-class"
    _write_folder(folder, {"plenty": 10, "scarce": 2})
    job = gateway.submit(REQUEST, common_pb2.DatasetRef(server_path=str(folder)))
    final, _ = follow(gateway, job.job_id, timeout_s=120)
    assert final.state == common_pb2.JOB_STATE_FAILED
    assert "scarce" in final.error and "3" in final.error, final.error
    _stack_serves(stack)


def test_empty_request_and_missing_dataset(gateway, stack, data_root):
    code, message = _code(lambda: gateway.submit("  ", common_pb2.DatasetRef(server_path=str(data_root))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "empty" in message
    code, message = _code(lambda: gateway.submit(REQUEST, common_pb2.DatasetRef()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "dataset" in message
    code, _ = _code(lambda: gateway.get_job("does-not-exist"))
    assert code == grpc.StatusCode.NOT_FOUND
    _stack_serves(stack)


def test_a_file_of_an_unread_kind_is_refused_at_upload(gateway, stack, tmp_path):
    path = tmp_path / "customers.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    code, message = _code(lambda: gateway._upload_file(path))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert ".csv" in message and ".parquet" in message, message
    _stack_serves(stack)


def test_a_csv_that_is_not_a_table_fails_the_job_naming_the_file(gateway, stack, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_bytes(bytes(range(256)) * 40)  # binary junk with a .csv name
    upload = gateway.upload(path)
    job = gateway.submit("Predict the order status", common_pb2.DatasetRef(upload_id=upload.upload_id))
    final, _ = follow(gateway, job.job_id, timeout_s=120)
    assert final.state == common_pb2.JOB_STATE_FAILED
    assert "orders.csv" in final.error, final.error
    _stack_serves(stack)


def test_a_label_column_that_is_not_there_fails_naming_the_columns(gateway, stack, tmp_path):
    path = tmp_path / "plants.csv"
    path.write_text("height,width,kind\n" + "".join(f"{i},{i % 7},{'ab'[i % 2]}\n" for i in range(60)))
    upload = gateway.upload(path)
    job = gateway.submit("Predict the `colour` column", common_pb2.DatasetRef(upload_id=upload.upload_id))
    final, _ = follow(gateway, job.job_id, timeout_s=120)
    assert final.task_spec.label_column == "colour"
    assert final.state == common_pb2.JOB_STATE_FAILED
    assert "colour" in final.error and "height" in final.error and "kind" in final.error, final.error
    _stack_serves(stack)
