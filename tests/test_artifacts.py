"""Result files: atomic writes, and errors that name the file and line."""

import threading

import pytest

from plus.artifacts import read_json, read_metrics, write_json
from plus.data.schema import read_jsonl


def test_invalid_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    for reader in (read_jsonl, read_metrics):
        with pytest.raises(ValueError, match=r"records.jsonl:2: not UTF-8"):
            reader(path)
    (tmp_path / "bad.json").write_bytes(b'{"a": "\xfe"}')
    with pytest.raises(ValueError, match=r"bad.json:1: not UTF-8"):
        read_json(tmp_path / "bad.json")


def test_concurrent_writers_never_tear_or_lose_a_json_file(tmp_path):
    path = tmp_path / "shared.json"
    errors = []

    def writer(k):
        try:
            for i in range(50):
                write_json(path, {"writer": k, "i": i, "pad": "x" * 5000})
        except Exception as error:  # a shared scratch name raised FileNotFoundError here
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    seen = []
    while any(thread.is_alive() for thread in threads):
        if path.exists():
            seen.append(read_json(path)["writer"])  # never a torn file
    for thread in threads:
        thread.join()
    assert not errors and read_json(path)["i"] == 49
    assert not list(tmp_path.glob("*.tmp")), "no scratch files left behind"
