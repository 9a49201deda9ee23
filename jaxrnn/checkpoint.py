"""Save and restore a pytree of arrays with its step, safely (no pickle) and atomically.

Format (one file, conventionally ``*.npz``): a zip archive, readable with
``numpy.load(path, allow_pickle=False)``, with members

    leaf_00000.npy, leaf_00001.npy, ...   one per leaf, in ``jax.tree_util`` order, written
                                          by ``numpy.lib.format`` with pickling disabled
    manifest.json                         a small JSON document:

    {"format": "jaxrnn.checkpoint", "version": 1, "step": 1200,
     "treedef": "PyTreeDef(...)",                     # str() of the tree structure
     "leaves": [{"path": "['params']['W_i']", "shape": [8, 2], "dtype": "float32",
                 "stored_as": "<f4", "stored_shape": [8, 2], "key_impl": null}, ...],
     "sha256": "...",                                 # over every leaf's path, dtype, shape, bytes
     "metadata": {...}}                               # any JSON data of the caller

Dtypes numpy cannot store without pickle (``bfloat16``, ...) are stored as unsigned integers
of the same width and viewed back on restore; typed PRNG keys (``jax.random.key``) are
stored as their key data and re-wrapped with their implementation. A checkpoint restores
into a template (``like``) of the same structure, shapes and dtypes, so the file never
decides what objects are built: the caller does. Anything else (a truncated file, another
tree, a wrong shape or dtype, a checksum that does not match) raises ``ValueError`` saying
what is wrong.

A save is atomic: the archive is written to a temporary file in the target's directory,
flushed and ``fsync``-ed, then moved over the target with ``os.replace``. A crash mid-save
leaves the previous checkpoint as it was (at worst a stray ``.*.tmp`` file beside it).

Loading a checkpoint somebody else wrote is safe: nothing is unpickled or evaluated (the
manifest is JSON, each ``.npy`` header is checked against the template before any array is
built), nothing is extracted to disk (members are read by the names this module gives them,
never by names found in the archive), and memory stays bounded by the template: a manifest
larger than ``MAX_MANIFEST_BYTES``, a member larger than its template leaf, or an ``.npy``
header that declares another shape or dtype is refused before it is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib

import jax
import numpy as np

from jaxrnn._checks import is_int

FORMAT = "jaxrnn.checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 2**20
_MAX_NPY_HEADER = 2**16 + 16  # magic, version, length field and the longest v1 header
# What zipfile raises on damaged or hostile archives (bad headers, unknown compression or
# zip versions, encryption, broken deflate streams): all become "truncated or corrupted".
_DAMAGED = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
)


def _member(index: int) -> str:
    return f"leaf_{index:05d}.npy"


def leaf_entries(tree):
    """``[(path string, leaf)]`` in ``jax.tree_util`` order, and the tree structure."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in with_paths], treedef


def _is_key(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _dtype_name(leaf) -> str:
    dtype = getattr(leaf, "dtype", None)
    return str(dtype if dtype is not None else np.asarray(leaf).dtype)


def _to_storable(leaf_path, leaf):
    """A numpy array pickle-free ``.npy`` can hold, and its manifest entry."""
    key_impl = None
    if _is_key(leaf):
        key_impl = str(jax.random.key_impl(leaf))
        array = np.asarray(jax.random.key_data(leaf))
    else:
        array = np.asarray(leaf)
    dtype = array.dtype
    if dtype.hasobject:
        raise ValueError(f"tree{leaf_path}: expected an array of numbers, got dtype {dtype}")
    if dtype.isbuiltin != 1:  # e.g. bfloat16: store its bits
        array = array.view(f"u{dtype.itemsize}")
    entry = {
        "shape": list(np.shape(leaf)),
        "dtype": _dtype_name(leaf),
        "stored_as": array.dtype.str,
        "stored_shape": list(array.shape),
        "key_impl": key_impl,
    }
    return np.asarray(array, order="C"), entry


def _checksum(paths, arrays) -> str:
    digest = hashlib.sha256()
    for path, array in zip(paths, arrays, strict=True):
        digest.update(f"{path}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _write_archive(file, arrays, manifest) -> None:
    """Write the zip archive (leaf members, then the manifest) to an open binary file."""
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for index, array in enumerate(arrays):
            with archive.open(_member(index), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
        archive.writestr(MANIFEST, json.dumps(manifest, indent=1))


def _fsync_directory(directory: str) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(path, tree, *, step: int, metadata=None) -> None:
    """Write ``tree`` (a pytree of arrays) and ``step`` to ``path``, atomically.

    Args:
      path: the checkpoint file (``.npz`` by convention); its directory must exist.
      tree: any pytree whose leaves are arrays (jax or numpy, any dtype, typed PRNG keys
        included), e.g. ``{"params": params, "opt_state": opt_state, "key": key}``.
      step: the training step the state belongs to (a non-negative integer).
      metadata: optional JSON-serialisable data stored in the manifest (e.g. a data seed, a
        loss history). Python floats round-trip exactly.
    """
    if not is_int(step) or step < 0:
        raise ValueError(f"step: expected a non-negative integer, got {step!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"path: the directory {directory!r} does not exist")
    entries, treedef = leaf_entries(tree)
    paths = [p for p, _ in entries]
    arrays, leaf_manifest = [], []
    for leaf_path, leaf in entries:
        array, entry = _to_storable(leaf_path, leaf)
        arrays.append(array)
        leaf_manifest.append({"path": leaf_path, **entry})
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(step),
        "treedef": str(treedef),
        "leaves": leaf_manifest,
        "sha256": _checksum(paths, arrays),
        "metadata": metadata,
    }
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata: expected JSON-serialisable data ({error})") from None
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as file:
            _write_archive(file, arrays, manifest)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _open_archive(path):
    if not os.path.isfile(path):
        raise ValueError(f"path: no checkpoint file at {path!r}")
    try:
        return zipfile.ZipFile(path, "r")
    except _DAMAGED as error:
        raise ValueError(
            f"checkpoint {path!r} is truncated or not a checkpoint (not a complete zip "
            f"archive: {error})"
        ) from None


def read_manifest(path) -> dict:
    """The manifest of the checkpoint at ``path`` (step, leaves, metadata, ...)."""
    path = os.fspath(path)
    with _open_archive(path) as archive:
        return _manifest_of(archive, path)


def _manifest_of(archive, path) -> dict:
    try:
        size = archive.getinfo(MANIFEST).file_size
    except KeyError:
        raise ValueError(f"checkpoint {path!r}: no {MANIFEST} in the archive") from None
    if size > MAX_MANIFEST_BYTES:
        raise ValueError(
            f"checkpoint {path!r}: {MANIFEST} has {size} bytes, more than the "
            f"{MAX_MANIFEST_BYTES} a manifest may have"
        )
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except _DAMAGED as error:  # RecursionError (deep JSON) is a RuntimeError
        raise ValueError(f"checkpoint {path!r}: unreadable {MANIFEST} ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path!r}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise ValueError(
            f"checkpoint {path!r}: format version {manifest.get('version')!r}, this "
            f"library reads version {VERSION}"
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise ValueError(f"checkpoint {path!r}: malformed {MANIFEST} ({problem})")
    return manifest


def _is_index(value) -> bool:
    return is_int(value) and value >= 0


def _is_shape(value) -> bool:
    return isinstance(value, list) and all(_is_index(n) for n in value)


_LEAF_FIELDS = {
    "path": lambda v: isinstance(v, str),
    "shape": _is_shape,
    "dtype": lambda v: isinstance(v, str),
    "stored_as": lambda v: isinstance(v, str),
    "stored_shape": _is_shape,
    "key_impl": lambda v: v is None or isinstance(v, str),
}


def _manifest_problem(manifest) -> str | None:
    """What is wrong with the manifest's fields, or None (so later code can trust them)."""
    if not _is_index(manifest.get("step")):
        return f"step: expected a non-negative integer, got {manifest.get('step')!r}"
    for field in ("treedef", "sha256"):
        if not isinstance(manifest.get(field), str):
            return f"{field}: expected a string, got {type(manifest.get(field)).__name__}"
    leaves = manifest.get("leaves")
    if not isinstance(leaves, list):
        return f"leaves: expected a list, got {type(leaves).__name__}"
    for index, leaf in enumerate(leaves):
        if not isinstance(leaf, dict):
            return f"leaves[{index}]: expected an object, got {type(leaf).__name__}"
        for field, valid in _LEAF_FIELDS.items():
            if field not in leaf or not valid(leaf[field]):
                return f"leaves[{index}].{field}: missing or invalid ({leaf.get(field)!r})"
    return None


def _storage_of(leaf):
    """``(dtype, shape, is_key)`` of the array :func:`save` stores for a template leaf."""
    if _is_key(leaf):
        data = jax.eval_shape(jax.random.key_data, leaf)
        return np.dtype(data.dtype), tuple(data.shape), True
    dtype = getattr(leaf, "dtype", None)
    dtype = np.dtype(dtype if dtype is not None else np.asarray(leaf).dtype)
    if dtype.isbuiltin != 1:
        dtype = np.dtype(f"u{dtype.itemsize}")
    return dtype, tuple(np.shape(leaf)), False


def _check_against_template(manifest, like, path):
    """Compare the manifest's leaves with the template's; raise naming the first mismatch.

    Returns the template's tree structure and, per leaf, the ``(dtype, shape)`` of the
    stored array, which bound what is read from the archive.
    """
    entries, treedef = leaf_entries(like)
    saved = manifest["leaves"]
    saved_paths = [leaf["path"] for leaf in saved]
    like_paths = [p for p, _ in entries]
    if saved_paths != like_paths or manifest["treedef"] != str(treedef):
        missing = [p for p in like_paths if p not in saved_paths]
        extra = [p for p in saved_paths if p not in like_paths]
        detail = f"missing leaves {missing}, unexpected leaves {extra}"
        if not missing and not extra:
            detail = f"same leaf paths, different structure: {manifest['treedef']}"
        raise ValueError(
            f"checkpoint {path!r}: its tree does not match the template `like` ({detail})"
        )
    storage = []
    for (leaf_path, leaf), entry in zip(entries, saved, strict=True):
        shape = list(np.shape(leaf))
        if entry["shape"] != shape:
            raise ValueError(
                f"checkpoint {path!r}: leaf {leaf_path} has shape {tuple(entry['shape'])}, "
                f"the template expects {tuple(shape)}"
            )
        dtype = _dtype_name(leaf)
        if entry["dtype"] != dtype:
            raise ValueError(
                f"checkpoint {path!r}: leaf {leaf_path} has dtype {entry['dtype']}, "
                f"the template expects {dtype}"
            )
        stored_dtype, stored_shape, is_key = _storage_of(leaf)
        said = (entry["stored_as"], tuple(entry["stored_shape"]), entry["key_impl"] is not None)
        if said != (stored_dtype.str, stored_shape, is_key):
            raise ValueError(
                f"checkpoint {path!r}: leaf {leaf_path} is stored as {said[0]} of shape "
                f"{said[1]}{' (a key)' if said[2] else ''}, a {dtype} leaf of shape "
                f"{tuple(shape)} is stored as {stored_dtype.str} of shape {stored_shape}"
            )
        storage.append((stored_dtype, stored_shape))
    return treedef, storage


def _read_npy(data: bytes, dtype, shape):
    """The array in the ``.npy`` bytes ``data``, which must hold ``dtype`` and ``shape``.

    The header is checked before an array is made, so a header declaring a huge shape
    allocates nothing; unlike ``numpy.lib.format.read_array`` nothing is sized by the file.
    """
    file = io.BytesIO(data)
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        header = np.lib.format.read_array_header_1_0(file)
    elif version == (2, 0):
        header = np.lib.format.read_array_header_2_0(file)
    else:
        raise ValueError(f"npy format version {version}, expected (1, 0) or (2, 0)")
    got_shape, fortran_order, got_dtype = header
    stored = (got_dtype.str, list(got_shape))
    if stored != (dtype.str, list(shape)):
        raise ValueError(f"stored as {stored}, the manifest says {(dtype.str, list(shape))}")
    payload = memoryview(data)[file.tell() :]
    nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if len(payload) != nbytes:
        raise ValueError(f"{len(payload)} bytes of array data, expected {nbytes}")
    array = np.frombuffer(payload, dtype).reshape(shape, order="F" if fortran_order else "C")
    return np.array(array, order="C")


def _from_stored(array, entry, template_leaf):
    """The array a stored one stands for (re-viewed dtype, re-wrapped key), of the
    template's kind: a jax array where the template has one, else a numpy array."""
    if entry["key_impl"] is not None:
        impl = (
            jax.random.key_impl(template_leaf)
            if isinstance(template_leaf, jax.Array)
            else entry["key_impl"]
        )
        return jax.random.wrap_key_data(jax.numpy.asarray(array), impl=impl)
    dtype = jax.numpy.dtype(entry["dtype"])
    if array.dtype != dtype:
        array = array.view(dtype)
    return jax.numpy.asarray(array) if isinstance(template_leaf, jax.Array) else array


def restore(path, like):
    """Read the checkpoint at ``path`` into the structure of ``like``.

    Args:
      path: a file written by :func:`save`.
      like: a template pytree with the same structure, leaf shapes and dtypes as the saved
        tree (e.g. freshly initialised params and ``optimizer.init(params)``, or their
        ``jax.eval_shape``); its values are not used.

    Returns:
      ``(tree, step, metadata)``: the saved tree (jax arrays where ``like`` has jax arrays,
      numpy arrays elsewhere, so float64 survives without x64), its step and its metadata.

    Raises:
      ValueError: the file is missing, truncated or not a checkpoint; its manifest is
        malformed; its tree, a shape or a dtype differs from ``like``; or its contents do
        not match the checksum.
    """
    path = os.fspath(path)
    with _open_archive(path) as archive:
        manifest = _manifest_of(archive, path)
        treedef, storage = _check_against_template(manifest, like, path)
        arrays = []
        for index, (entry, (dtype, shape)) in enumerate(
            zip(manifest["leaves"], storage, strict=True)
        ):
            try:
                size = archive.getinfo(_member(index)).file_size
                limit = dtype.itemsize * int(np.prod(shape, dtype=np.int64)) + _MAX_NPY_HEADER
                if size > limit:
                    raise ValueError(f"{size} bytes, more than the {limit} its array needs")
                with archive.open(_member(index)) as member:
                    arrays.append(_read_npy(member.read(), dtype, shape))
            except (KeyError, *_DAMAGED) as error:
                raise ValueError(
                    f"checkpoint {path!r}: leaf {entry['path']} is unreadable, the file is "
                    f"truncated or corrupted ({error})"
                ) from None
    paths = [entry["path"] for entry in manifest["leaves"]]
    if _checksum(paths, arrays) != manifest["sha256"]:
        raise ValueError(
            f"checkpoint {path!r}: checksum mismatch, the arrays are not the ones that were "
            "saved (corrupted or edited file)"
        )
    leaves = []
    for array, entry, leaf in zip(
        arrays, manifest["leaves"], jax.tree_util.tree_leaves(like), strict=True
    ):
        try:
            leaves.append(_from_stored(array, entry, leaf))
        except (TypeError, ValueError) as error:  # e.g. an unknown key implementation
            raise ValueError(
                f"checkpoint {path!r}: leaf {entry['path']} cannot be restored ({error})"
            ) from None
    tree = jax.tree_util.tree_unflatten(treedef, leaves)
    return tree, manifest["step"], manifest.get("metadata")
