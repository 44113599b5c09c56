"""Recorded content hashes: reused while path, size and mtime are unchanged."""

import json
import os

from allwen.data import load_source
from allwen.data.hashes import HashRecord


def test_a_record_hashes_only_new_or_changed_files(tmp_path, tiny_bmp):
    for cls in ("a", "b"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "d" / cls / f"{i}.bmp").write_bytes(tiny_bmp + bytes([i]) + cls.encode())
    record = HashRecord(path=tmp_path / "hashes.json")
    first = load_source(tmp_path / "d", "folder", hashes=record)
    assert record.hashed == 6 and record.reused == 0
    record.save()
    again = HashRecord.load(tmp_path / "hashes.json")
    second = load_source(tmp_path / "d", "folder", hashes=again)
    assert again.hashed == 0 and again.reused == 6
    assert list(first.frame.sha256) == list(second.frame.sha256)
    changed = tmp_path / "d" / "a" / "0.bmp"
    changed.write_bytes(tiny_bmp + b"other content")  # size differs
    third = load_source(tmp_path / "d", "folder", hashes=again)
    assert again.hashed == 1
    assert third.frame.set_index("path").sha256[str(changed)] != first.frame.set_index("path").sha256[str(changed)]


def test_an_unreadable_record_means_hashing_again(tmp_path, caplog):
    (tmp_path / "hashes.json").write_text("{not json")
    assert HashRecord.load(tmp_path / "hashes.json").entries == {}
    (tmp_path / "old.json").write_text(json.dumps({"version": 99, "files": {}}))
    assert HashRecord.load(tmp_path / "old.json").entries == {}
    assert HashRecord.load(tmp_path / "missing.json").entries == {}
    assert os.path.exists(tmp_path / "hashes.json")
