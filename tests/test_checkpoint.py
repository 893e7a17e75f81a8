"""Checkpoints: the on-disk layout, no pickle, manifest verification, fallback past damaged saves,
one-line messages and one-line shape errors. Small pytrees only: no training runs."""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fluxrl.errors import FluxError
from fluxrl.train import checkpoint as ck


def device_state(k: float = 0.0) -> dict:
    return {"w": np.arange(6, dtype=np.float32).reshape(2, 3) + k,
            "b": {"c": np.asarray(3 + int(k), np.int32), "v": np.full(4, k, np.float64)},
            "l": [np.ones(2, np.float32) * k]}


def host_state(k: int = 0) -> dict:
    rng = np.random.default_rng(k)
    rng.random()
    return {"env": {"envs": [[{"mj": np.linspace(0, 1, 5) + k, "elapsed": 7 + k,
                               "rng": rng.bit_generator.state}]],
                    "rngs": [rng.bit_generator.state]},
            "obs": np.full((1, 1, 3), k, np.float32), "action": np.zeros((1, 1, 1), np.float32)}


class Log(list):
    """A ``log`` callable that keeps the lines and checks each is one line."""

    def __call__(self, msg: str) -> None:
        assert isinstance(msg, str) and "\n" not in msg and msg.strip() == msg
        self.append(msg)


def two_saves(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    ck.save(run, 1000, device_state(1.0), host_state(1))
    ck.save(run, 2000, device_state(2.0), host_state(2))
    return run


def assert_tree_equal(a, b):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            assert_tree_equal(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_tree_equal(x, y)
    elif isinstance(a, np.ndarray | np.generic):
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, float) and a != a:
        assert isinstance(b, float) and b != b
    else:
        assert type(a) is type(b) and a == b, (a, b)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


def biggest_device_file(path: Path) -> Path:
    return max((p for p in (path / "device").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


# --- layout and the happy path ----------------------------------------------------------------


def test_layout_manifest_and_latest(tmp_path):
    run = two_saves(tmp_path)
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["1000", "2000", "LATEST"]
    assert (root / "LATEST").read_text() == "2000"
    path = root / "2000"
    assert not list(path.rglob("*.pkl"))
    manifest = json.loads((path / "MANIFEST.json").read_text())
    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {"MANIFEST.json"}
    assert {"host.json", "host.npz"} <= set(manifest["files"])
    assert any(f.startswith("device/") for f in manifest["files"])
    for rel, entry in manifest["files"].items():
        data = (path / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert ck.latest_step(run) == 2000


def test_open_latest_round_trip(tmp_path):
    run = two_saves(tmp_path)
    log = Log()
    c = ck.open_latest(run, log=log)
    assert log == [] and c.frame == 2000 and c.path == run / "checkpoints" / "2000"
    assert_tree_equal(c.host, host_state(2))
    dev = c.device(device_state())
    np.testing.assert_array_equal(dev["w"], device_state(2.0)["w"])
    assert isinstance(dev["b"]["c"], np.ndarray) and dev["b"]["c"].shape == () and dev["b"]["c"] == 5
    np.testing.assert_array_equal(dev["l"][0], device_state(2.0)["l"][0])


def test_restore_keeps_its_old_contract(tmp_path):
    run = two_saves(tmp_path)
    dev, host, step = ck.restore(run, device_state())
    assert step == 2000 and isinstance(dev["b"]["c"], np.ndarray)
    assert_tree_equal(host, host_state(2))
    dev, host, step = ck.restore(run, device_state(), step=1000)
    assert step == 1000 and float(dev["b"]["v"][0]) == 1.0


def test_keeps_newest_two(tmp_path):
    run = two_saves(tmp_path)
    ck.save(run, 3000, device_state(3.0), host_state(3))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2000", "3000", "LATEST"]


def test_unsupported_host_data_fails_before_writing(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TypeError, match=r"host\['obj'\]"):
        ck.save(run, 1000, device_state(), {"obj": object()})
    with pytest.raises(TypeError, match="object array"):
        ck.save(run, 1000, device_state(), {"a": np.array([None, 1], dtype=object)})
    assert ck.latest_step(run) is None and ck.open_latest(run, log=Log()) is None


# --- host state: json + npz, no pickle ----------------------------------------------------------


def test_host_state_round_trip_exact(tmp_path):
    bits = np.random.default_rng([3, 7])
    bits.random(3)
    host = {
        "big": 2**128 + 12345, "neg_big": -(2**70), "edge": 2**63 - 1, "small": -3, "zero": 0,
        "floats": [0.1, -0.0, 1e308, float("nan"), float("inf"), -float("inf")],
        "flags": (True, False, None), "text": "héllo",
        "nested": [[1, [2, (3, {"deep": np.arange(3, dtype=np.int8)})]], []],
        "empty": {}, "empty_tuple": (),
        "arrays": {str(dt): np.arange(6).astype(dt).reshape(2, 3)
                   for dt in ("float16", "float32", "float64", "int8", "int32", "int64",
                              "uint8", "uint32", "uint64", "bool", "complex64")},
        "zero_d": np.asarray(2.5), "empty_array": np.zeros((0, 4), np.float32),
        "strings": np.array(["a", "bc"]),
        "scalars": [np.float32(1.5), np.int64(-2), np.bool_(True), np.uint32(7), np.float64(0.25)],
        "pcg64": bits.bit_generator.state,
        "random_state": np.random.RandomState(4).get_state(),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "view": np.arange(10.0)[::3],
    }
    d = tmp_path / "h"
    d.mkdir()
    ck.write_host(d, host)
    back = ck.read_host(d)
    assert_tree_equal(host, back)
    assert back["pcg64"]["state"]["state"] == bits.bit_generator.state["state"]["state"]
    restored = np.random.default_rng()
    restored.bit_generator.state = back["pcg64"]
    np.testing.assert_array_equal(restored.random(4), bits.random(4))
    rs = np.random.RandomState()
    rs.set_state(back["random_state"])
    np.testing.assert_array_equal(rs.rand(3), np.random.RandomState(4).rand(3))


def test_host_npz_loads_without_pickle(tmp_path):
    run = two_saves(tmp_path)
    path = run / "checkpoints" / "2000"
    with np.load(path / "host.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert arrays and all(a.dtype != object for a in arrays.values())
    with zipfile.ZipFile(path / "host.npz") as z:
        assert all(n.endswith(".npy") for n in z.namelist())
    doc = json.loads((path / "host.json").read_text())  # plain JSON, standard values only
    assert doc["format"] == ck.FORMAT
    assert "NaN" not in (path / "host.json").read_text()


# --- damage, detection and fallback --------------------------------------------------------------


def test_truncated_host_file_falls_back_and_keeps_the_bad_one(tmp_path):
    run = two_saves(tmp_path)
    npz = run / "checkpoints" / "2000" / "host.npz"
    size = npz.stat().st_size
    original = {p.relative_to(npz.parent).as_posix() for p in npz.parent.rglob("*")}
    npz.write_bytes(npz.read_bytes()[:10])
    log = Log()
    c = ck.open_latest(run, log=log)
    assert c is not None and c.frame == 1000
    assert_tree_equal(c.host, host_state(1))
    bad = run / "checkpoints" / "bad" / "2000-corrupt"
    assert log == [f"checkpoint 2000 is corrupt (host.npz is 10 bytes, the manifest says {size}); "
                   f"moved to {bad}; falling back to checkpoint 1000"]
    assert {p.relative_to(bad).as_posix() for p in bad.rglob("*")} == original  # kept, whole
    assert not (run / "checkpoints" / "2000").exists()
    assert (run / "checkpoints" / "LATEST").read_text() == "1000"
    assert ck.open_latest(run, log=log) is not None and len(log) == 1  # nothing more to report


def test_truncated_device_file(tmp_path):
    run = two_saves(tmp_path)
    f = biggest_device_file(run / "checkpoints" / "2000")
    f.write_bytes(f.read_bytes()[:-7])
    log = Log()
    assert ck.open_latest(run, log=log).frame == 1000
    rel = f.relative_to(run / "checkpoints" / "2000").as_posix()
    assert len(log) == 1 and log[0].startswith(f"checkpoint 2000 is corrupt ({rel} is ")
    assert (run / "checkpoints" / "bad" / "2000-corrupt").is_dir()


def test_changed_bytes_fail_the_hash(tmp_path):
    run = two_saves(tmp_path)
    f = run / "checkpoints" / "2000" / "host.json"
    text = f.read_text()
    f.write_text(text.replace('"elapsed": 9', '"elapsed": 8'))
    assert f.read_text() != text and len(f.read_text()) == len(text)
    log = Log()
    assert ck.open_latest(run, log=log).frame == 1000
    assert "host.json does not match its sha256 in the manifest" in log[0]


def test_device_data_gone(tmp_path):
    run = two_saves(tmp_path)
    shutil.rmtree(run / "checkpoints" / "2000" / "device")
    log = Log()
    assert ck.open_latest(run, log=log).frame == 1000
    assert len(log) == 1 and "checkpoint 2000 is corrupt (device/" in log[0]
    assert "is missing)" in log[0]


def test_garbage_latest_is_ignored(tmp_path):
    run = two_saves(tmp_path)
    latest = run / "checkpoints" / "LATEST"
    for junk in (b"\x00\xffgarbage\n", b"", b"9999", b"-5"):
        latest.write_bytes(junk)
        log = Log()
        assert ck.latest_step(run) == 2000
        c = ck.open_latest(run, log=log)
        assert c.frame == 2000 and log == []
    latest.unlink()
    assert ck.open_latest(run, log=Log()).frame == 2000


def test_missing_manifest_is_an_interrupted_save(tmp_path):
    run = two_saves(tmp_path)
    (run / "checkpoints" / "2000" / "MANIFEST.json").unlink()
    assert ck.latest_step(run) == 1000
    assert (run / "checkpoints" / "2000").is_dir(), "latest_step must not move anything"
    log = Log()
    assert ck.open_latest(run, log=log).frame == 1000
    bad = run / "checkpoints" / "bad" / "2000-incomplete"
    assert log == ["checkpoint 2000 is incomplete (it has no MANIFEST.json, so its save was "
                   f"interrupted); moved to {bad}; falling back to checkpoint 1000"]


def test_unreadable_manifest_is_incomplete(tmp_path):
    run = two_saves(tmp_path)
    (run / "checkpoints" / "2000" / "MANIFEST.json").write_text('{"format": 1, "fil')
    log = Log()
    assert ck.open_latest(run, log=log).frame == 1000
    assert "checkpoint 2000 is incomplete (its MANIFEST.json is unreadable" in log[0]


def test_killed_save_leaves_no_numbered_dir(tmp_path):
    """A save killed before its rename leaves ``.partial-<frame>``: invisible, then cleaned up."""
    run = two_saves(tmp_path)
    partial = run / "checkpoints" / ".partial-3000"
    shutil.copytree(run / "checkpoints" / "2000", partial)
    (partial / "MANIFEST.json").unlink()
    assert ck.latest_step(run) == 2000
    assert ck.open_latest(run, log=Log()).frame == 2000
    ck.save(run, 3000, device_state(3.0), host_state(3))
    assert not partial.exists() and ck.open_latest(run, log=Log()).frame == 3000


def test_old_format_checkpoint_is_named_not_loaded(tmp_path):
    run = two_saves(tmp_path)
    old = run / "checkpoints" / "3000"
    shutil.copytree(run / "checkpoints" / "2000" / "device", old / "device")
    (old / "host.pkl").write_bytes(b"\x80\x04N.")  # a pickle; it must never be loaded
    (run / "checkpoints" / "LATEST").write_text("3000")
    assert ck.latest_step(run) == 2000
    log = Log()
    assert ck.open_latest(run, log=log).frame == 2000
    bad = run / "checkpoints" / "bad" / "3000-old-format"
    assert log == ["checkpoint 3000 was written by an older fluxrl (host.pkl, no manifest) and "
                   f"cannot be read safely, so it is not loaded; moved to {bad}; falling back to "
                   "checkpoint 2000"]
    assert (bad / "host.pkl").exists()


def test_only_old_format_checkpoints(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "4000").mkdir(parents=True)
    (run / "checkpoints" / "4000" / "host.pkl").write_bytes(b"\x80\x04N.")
    (run / "checkpoints" / "LATEST").write_text("4000")
    assert ck.latest_step(run) is None
    with pytest.raises(FluxError) as exc:
        ck.restore(run, device_state(), step=4000)
    assert "written by an older fluxrl" in one_line(exc)
    log = Log()
    assert ck.open_latest(run, log=log) is None
    assert len(log) == 1 and "older fluxrl" in log[0]
    assert log[0].endswith("no intact checkpoint is left")


def test_no_intact_checkpoint_gives_none(tmp_path):
    run = two_saves(tmp_path)
    for frame in ("1000", "2000"):
        npz = run / "checkpoints" / frame / "host.npz"
        npz.write_bytes(npz.read_bytes()[:-1])
    log = Log()
    assert ck.open_latest(run, log=log) is None
    assert [line.split(" is ")[0] for line in log] == ["checkpoint 2000", "checkpoint 1000"]
    assert all(line.endswith("; no intact checkpoint is left") for line in log)
    assert sorted(p.name for p in (run / "checkpoints" / "bad").iterdir()) == [
        "1000-corrupt", "2000-corrupt"]
    with pytest.raises(FluxError) as exc:
        ck.restore(run, device_state())
    assert "holds no intact checkpoint" in one_line(exc)
    assert ck.open_latest(tmp_path / "nowhere", log=log) is None


def test_same_frame_moved_aside_twice_keeps_both(tmp_path):
    run = two_saves(tmp_path)
    for _ in range(2):
        (run / "checkpoints" / "2000" / "MANIFEST.json").unlink()
        assert ck.open_latest(run, log=Log()).frame == 1000
        ck.save(run, 2000, device_state(2.0), host_state(2))
    assert sorted(p.name for p in (run / "checkpoints" / "bad").iterdir()) == [
        "2000-incomplete", "2000-incomplete-2"]


def test_default_log_is_one_line_on_stderr(tmp_path, capsys):
    run = two_saves(tmp_path)
    (run / "checkpoints" / "2000" / "MANIFEST.json").unlink()
    assert ck.open_latest(run).frame == 1000
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "checkpoint 2000 is incomplete" in err


# --- device state against the run's structure ------------------------------------------------------


def test_shape_mismatch_is_one_line_naming_the_leaf(tmp_path):
    run = two_saves(tmp_path)
    c = ck.open_latest(run, log=Log())
    target = device_state()
    target["w"] = np.zeros((3, 3), np.float32)
    with pytest.raises(FluxError) as exc:
        c.device(target)
    msg = one_line(exc)
    assert "leaf w has shape (2, 3) in the checkpoint but (3, 3) in this run" in msg
    assert "checkpoint 2000" in msg
    target = device_state()
    target["b"]["extra"] = np.zeros(2)
    with pytest.raises(FluxError) as exc:
        c.device(target)
    assert "it has no leaf b.extra (this run expects shape (2,))" in one_line(exc)
    del target["b"]["extra"], target["l"]
    with pytest.raises(FluxError) as exc:
        c.device(target)
    assert "it has a leaf l.0 that this run does not" in one_line(exc)


def test_other_orbax_failure_is_one_line(tmp_path):
    run = two_saves(tmp_path)
    c = ck.open_latest(run, log=Log())
    shutil.rmtree(c.path / "device")  # damaged after it was verified
    with pytest.raises(FluxError) as exc:
        c.device(device_state())
    msg = one_line(exc)
    assert msg.startswith(f"checkpoint 2000 in {c.path} cannot be read: ")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's event loop
def test_damaged_array_data_after_verification_is_one_line(tmp_path):
    run = two_saves(tmp_path)
    c = ck.open_latest(run, log=Log())
    for f in (c.path / "device").rglob("*"):
        if f.is_file() and "/d/" in f.as_posix():
            f.write_bytes(b"\x00" * 8)
    with pytest.raises(FluxError) as exc:
        c.device(device_state())
    assert one_line(exc).startswith(f"checkpoint 2000 in {c.path} cannot be read: ")
    gc.collect()  # let orbax's leftover event-loop error surface here, where it is filtered


def test_orbax_restore_failure_is_one_line(tmp_path, monkeypatch):
    run = two_saves(tmp_path)
    c = ck.open_latest(run, log=Log())

    def fail(self, *args, **kwargs):
        raise ValueError("tensorstore said no\n" + "  detail line\n" * 70)

    monkeypatch.setattr(ck.ocp.StandardCheckpointer, "restore", fail)
    with pytest.raises(FluxError) as exc:
        c.device(device_state())
    assert one_line(exc) == (f"checkpoint 2000 in {c.path} cannot be read: ValueError: "
                             "tensorstore said no")
