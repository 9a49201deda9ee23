"""Checkpoints: exact round trips, pickle-free format, atomic saves, clear errors."""

import io
import json
import os
import stat
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxrnn import checkpoint


def _tree():
    params = {
        "W": jnp.arange(6, dtype=jnp.float32).reshape(3, 2) / 7,
        "b": jnp.array([1.5, -2.25, 3.0], jnp.float64),
        "scale": jnp.array(0.1, jnp.bfloat16),
    }
    return {
        "params": params,
        "opt_state": optax.adam(1e-3).init(params),
        "key": jax.random.key(42),
        "raw_key": jax.random.PRNGKey(7),
        "counts": np.array([[1, 2], [3, 4]], np.int32),
    }


def _assert_same_tree(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.array_equal(np.asarray(x), np.asarray(y))


def _rewrite(path, edit):
    """Rewrite the archive at ``path``, passing {member name: bytes} through ``edit``."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members = edit(members)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_round_trip_is_exact_for_every_dtype_and_key(tmp_path):
    tree = _tree()
    path = tmp_path / "run.npz"
    checkpoint.save(path, tree, step=17, metadata={"losses": [0.5, 1 / 3], "seed": 3})
    restored, step, metadata = checkpoint.restore(path, tree)
    _assert_same_tree(restored, tree)
    assert step == 17
    assert isinstance(restored["counts"], np.ndarray)  # numpy where the template has numpy
    assert isinstance(restored["params"]["W"], jax.Array)
    assert metadata == {"losses": [0.5, 1 / 3], "seed": 3}
    assert jax.random.key_impl(restored["key"]) == jax.random.key_impl(tree["key"])
    # the same key draws the same numbers after the round trip
    assert np.array_equal(
        jax.random.normal(restored["key"], (3,)), jax.random.normal(tree["key"], (3,))
    )


def test_format_is_a_pickle_free_npz_with_a_json_manifest(tmp_path):
    tree = {"a": np.arange(5.0), "b": {"c": np.eye(2, dtype=np.float32)}}
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, tree, step=3)
    with np.load(path, allow_pickle=False) as npz:
        assert np.array_equal(npz["leaf_00000"], tree["a"])
        assert np.array_equal(npz["leaf_00001"], tree["b"]["c"])
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["step"] == 3
    assert [leaf["path"] for leaf in manifest["leaves"]] == ["['a']", "['b']['c']"]
    assert [leaf["shape"] for leaf in manifest["leaves"]] == [[5], [2, 2]]
    assert [leaf["dtype"] for leaf in manifest["leaves"]] == ["float64", "float32"]
    assert checkpoint.read_manifest(path) == manifest


def test_saving_again_replaces_the_checkpoint(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"w": np.zeros(3)}, step=1)
    checkpoint.save(path, {"w": np.ones(3)}, step=2)
    tree, step, _ = checkpoint.restore(path, {"w": np.zeros(3)})
    assert step == 2 and np.array_equal(tree["w"], np.ones(3))
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary files left


def test_crash_mid_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    old = {"w": np.arange(4.0), "v": np.full(3, 2.0)}
    checkpoint.save(path, old, step=10)
    calls = []
    real_write = np.lib.format.write_array

    def write_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first leaf is written, the second one crashes
            raise OSError("disk full (simulated)")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_crash)
    new = {"w": -np.arange(4.0), "v": np.zeros(3)}
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save(path, new, step=20)
    assert len(calls) == 2
    monkeypatch.undo()
    tree, step, _ = checkpoint.restore(path, old)
    assert step == 10
    _assert_same_tree(tree, jax.tree_util.tree_map(jnp.asarray, old))
    assert os.listdir(tmp_path) == ["c.npz"]


def test_crash_before_the_rename_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"w": np.arange(3.0)}, step=1)

    def crash(*args):
        raise OSError("power cut (simulated)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save(path, {"w": np.zeros(3)}, step=2)
    monkeypatch.undo()
    tree, step, _ = checkpoint.restore(path, {"w": np.zeros(3)})
    assert step == 1 and np.array_equal(tree["w"], np.arange(3.0))


@pytest.mark.parametrize("keep", [0, 10, 0.5, -4])
def test_truncated_file_raises(tmp_path, keep):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"w": np.arange(100.0)}, step=1)
    data = path.read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:size])
    with pytest.raises(ValueError, match="truncated"):
        checkpoint.restore(path, {"w": np.zeros(100)})


def test_flipped_byte_in_an_array_raises(tmp_path):
    path = tmp_path / "c.npz"
    values = np.arange(100.0)
    checkpoint.save(path, {"w": values}, step=1)
    data = bytearray(path.read_bytes())
    position = data.find(values[50].tobytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"\['w'\] is unreadable.*corrupted"):
        checkpoint.restore(path, {"w": values})


def test_array_replaced_behind_the_manifest_fails_the_checksum(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"w": np.arange(4.0)}, step=1)

    def edit(members):
        members["leaf_00000.npy"] = _npy_bytes(np.array([0.0, 1.0, 2.0, 3.5]))
        return members

    _rewrite(path, edit)
    with pytest.raises(ValueError, match="checksum mismatch"):
        checkpoint.restore(path, {"w": np.zeros(4)})


def test_stored_array_disagreeing_with_the_manifest_raises(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"w": np.arange(4.0)}, step=1)

    def edit(members):
        members["leaf_00000.npy"] = _npy_bytes(np.arange(5.0))
        return members

    _rewrite(path, edit)
    with pytest.raises(ValueError, match=r"\['w'\].*stored as"):
        checkpoint.restore(path, {"w": np.zeros(4)})


def test_mismatched_tree_names_the_leaves(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"W": np.ones((2, 3)), "b": np.zeros(2)}, step=1)
    with pytest.raises(ValueError, match=r"missing leaves \[\"\['c'\]\"\].*unexpected.*\['b'\]"):
        checkpoint.restore(path, {"W": np.ones((2, 3)), "c": np.zeros(2)})
    with pytest.raises(ValueError, match="does not match the template"):
        checkpoint.restore(path, {"W": np.ones((2, 3))})
    as_tuple = tmp_path / "t.npz"
    checkpoint.save(as_tuple, (np.ones(2), np.zeros(2)), step=1)
    with pytest.raises(ValueError, match="same leaf paths, different structure"):
        checkpoint.restore(as_tuple, [np.ones(2), np.zeros(2)])


def test_wrong_shape_and_dtype_name_the_leaf(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"W": np.ones((2, 3), np.float32)}, step=1)
    with pytest.raises(ValueError, match=r"\['W'\] has shape \(2, 3\).*expects \(3, 2\)"):
        checkpoint.restore(path, {"W": np.ones((3, 2), np.float32)})
    with pytest.raises(ValueError, match=r"\['W'\] has dtype float32.*expects float64"):
        checkpoint.restore(path, {"W": np.ones((2, 3), np.float64)})


def test_not_a_checkpoint_raises(tmp_path):
    missing = tmp_path / "nothing.npz"
    with pytest.raises(ValueError, match="no checkpoint file"):
        checkpoint.restore(missing, {})
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.zeros(3))
    with pytest.raises(ValueError, match="no manifest.json"):
        checkpoint.restore(plain, {"w": np.zeros(3)})
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a complete zip"):
        checkpoint.read_manifest(text)


def test_other_format_version_raises(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"w": np.zeros(2)}, step=1)

    def edit(members):
        manifest = json.loads(members["manifest.json"])
        manifest["version"] = 99
        members["manifest.json"] = json.dumps(manifest).encode()
        return members

    _rewrite(path, edit)
    with pytest.raises(ValueError, match="version 99"):
        checkpoint.restore(path, {"w": np.zeros(2)})


def test_bad_save_arguments_raise(tmp_path):
    tree = {"w": np.zeros(2)}
    for step in (-1, True, 1.5, "3"):
        with pytest.raises(ValueError, match="step: expected a non-negative integer"):
            checkpoint.save(tmp_path / "c.npz", tree, step=step)
    with pytest.raises(ValueError, match="metadata: expected JSON"):
        checkpoint.save(tmp_path / "c.npz", tree, step=1, metadata={"f": object()})
    with pytest.raises(ValueError, match="does not exist"):
        checkpoint.save(tmp_path / "no" / "c.npz", tree, step=1)
    with pytest.raises(ValueError, match=r"tree\['w'\]: expected an array of numbers"):
        checkpoint.save(tmp_path / "c.npz", {"w": np.array([object()])}, step=1)
    assert os.listdir(tmp_path) == []


@given(
    shapes=st.lists(st.lists(st.integers(0, 4), max_size=3), min_size=1, max_size=4),
    dtypes=st.lists(
        st.sampled_from(["float32", "float64", "int8", "int32", "uint16", "bool", "bfloat16"]),
        min_size=4,
        max_size=4,
    ),
    seed=st.integers(0, 2**16),
)
def test_any_tree_of_arrays_round_trips_bit_for_bit(tmp_path_factory, shapes, dtypes, seed):
    rng = np.random.default_rng(seed)
    tree = {
        f"leaf{i}": [
            (rng.normal(size=shape) * 100).astype(jnp.dtype(dtype)),
            {"nested": rng.integers(0, 2, size=shape).astype(jnp.dtype(dtype))},
        ]
        for i, (shape, dtype) in enumerate(zip(shapes, dtypes, strict=False))
    }
    path = tmp_path_factory.mktemp("roundtrip") / "c.npz"
    checkpoint.save(path, tree, step=seed)
    restored, step, _ = checkpoint.restore(path, tree)
    assert step == seed
    for saved, back in zip(jax.tree.leaves(tree), jax.tree.leaves(restored), strict=True):
        assert back.dtype == saved.dtype and back.shape == saved.shape
        assert np.asarray(back).tobytes() == saved.tobytes()


def _edit_manifest(path, change):
    def edit(members):
        manifest = json.loads(members["manifest.json"])
        change(manifest)
        members["manifest.json"] = json.dumps(manifest).encode()
        return members

    _rewrite(path, edit)


def test_npy_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"w": np.arange(4.0)}, step=1)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)}
    )

    def edit(members):
        members["leaf_00000.npy"] = header.getvalue() + np.arange(4.0).tobytes()
        return members

    _rewrite(path, edit)  # 8 TiB declared: reading it as numpy.load does would not end well
    with pytest.raises(ValueError, match=r"\['w'\] is unreadable.*stored as.*1099511627776"):
        checkpoint.restore(path, {"w": np.zeros(4)})


def test_members_larger_than_the_template_needs_are_not_read(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"w": np.arange(4.0)}, step=1)
    # 64 MiB of zeros deflate to ~64 KiB: a small file that would inflate in memory
    with zipfile.ZipFile(path) as archive:
        manifest = archive.read("manifest.json")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("leaf_00000.npy", bytes(64 * 2**20))
        archive.writestr("manifest.json", manifest)
    assert os.path.getsize(path) < 2**20
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(
        zipfile.ZipFile,
        "open",
        lambda self, name, *a, **k: opened.append(name) or real_open(self, name, *a, **k),
    )
    with pytest.raises(ValueError, match=r"\['w'\] is unreadable.*67108864 bytes, more than"):
        checkpoint.restore(path, {"w": np.zeros(4)})
    assert "leaf_00000.npy" not in opened
    monkeypatch.setattr(checkpoint, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(ValueError, match=r"manifest.json has \d+ bytes, more than the 100"):
        checkpoint.read_manifest(path)


def test_malformed_manifests_raise_value_errors(tmp_path):
    path = tmp_path / "c.npz"
    tree = {"w": np.arange(4.0), "key": jax.random.key(0)}
    checkpoint.save(path, tree, step=1)
    original = path.read_bytes()

    def set_step(m):
        m["step"] = "1"

    def drop_leaves(m):
        m["leaves"] = {"0": m["leaves"][0]}

    def drop_stored_shape(m):
        del m["leaves"][1]["stored_shape"]

    def object_dtype(m):
        m["leaves"][1]["stored_as"] = "|O"

    def float_as_key(m):
        m["leaves"][1]["key_impl"] = "threefry2x32"

    def huge_key(m):
        m["leaves"][0]["stored_shape"] = [2**40, 2]

    cases = [
        (set_step, "malformed manifest.json.*step: expected a non-negative integer"),
        (drop_leaves, "malformed manifest.json.*leaves: expected a list"),
        (drop_stored_shape, r"leaves\[1\].stored_shape: missing or invalid"),
        (object_dtype, r"leaf \['w'\] is stored as \|O of shape \(4,\), a float64 leaf"),
        (float_as_key, r"leaf \['w'\] is stored as <f8 of shape \(4,\) \(a key\)"),
        (huge_key, r"leaf \['key'\] is stored as <u4 of shape \(1099511627776, 2\)"),
    ]
    for change, message in cases:
        path.write_bytes(original)
        _edit_manifest(path, change)
        with pytest.raises(ValueError, match=message):
            checkpoint.restore(path, tree)
    path.write_bytes(original)
    deep = "[" * 100_000 + "]" * 100_000

    def nested(members):
        members["manifest.json"] = deep.encode()
        return members

    _rewrite(path, nested)
    with pytest.raises(ValueError, match="unreadable manifest.json"):
        checkpoint.read_manifest(path)


def test_restores_into_an_abstract_template(tmp_path):
    tree = {"w": jnp.arange(3.0), "key": jax.random.key(5), "n": np.int32(2)}
    path = tmp_path / "c.npz"
    checkpoint.save(path, tree, step=4)
    restored, step, metadata = checkpoint.restore(path, jax.eval_shape(lambda: tree))
    assert step == 4 and metadata is None
    assert np.array_equal(restored["w"], tree["w"]) and restored["n"] == 2
    assert np.array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(tree["key"]))


def test_damaged_files_only_ever_raise_value_errors(tmp_path):
    import random

    path = tmp_path / "c.npz"
    tree = {"w": np.arange(6.0).reshape(2, 3), "key": jax.random.key(1), "n": np.int32(3)}
    checkpoint.save(path, tree, step=5, metadata={"seed": 1})
    original = path.read_bytes()
    rng = random.Random(0)
    outcomes = set()
    for trial in range(400):
        data = bytearray(original)
        if trial % 3 == 0:  # a few random bytes
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif trial % 3 == 1:  # cut anywhere
            data = data[: rng.randrange(len(data))]
        else:  # a 32-bit field (size, offset, version, method) set to an extreme
            at = rng.randrange(len(data) - 4)
            data[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\xff\xff\xff\x7f"])
        path.write_bytes(bytes(data))
        try:
            restored, step, metadata = checkpoint.restore(path, tree)
        except ValueError:
            outcomes.add("ValueError")
            continue
        # a byte that nothing reads (e.g. a zip timestamp): then the state must be intact
        _assert_same_tree(restored, tree)
        assert (step, metadata) == (5, {"seed": 1})
        outcomes.add("restored")
    assert "ValueError" in outcomes


def test_saved_file_has_the_permissions_of_a_plain_open(tmp_path):
    path = tmp_path / "perm.ckpt"
    checkpoint.save(path, {"a": np.zeros(3)}, step=0)
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
