"""RFC 9162 Merkle tree hashing: what makes the audit log tamper-evident.

A log proves nothing unless every party computes the same root for the same
entries and accepts exactly the proofs every other implementation accepts. So
this module is the spec transcribed, not a design of our own (SPEC.md §Merkle):

- roots and proofs are built from the recursive definitions of RFC 9162 §2.1
  (MTH, PATH, SUBPROOF), which are the RFC 6962 ones with SHA-256;
- proofs are checked with the iterative algorithms of §2.1.3.2 and §2.1.4.2,
  after an up-front check of every length, so that a malformed proof fails
  with a reason rather than a bare "mismatch".

Building is O(n) over the whole list; a stored log keeps leaf hashes and
calls the ``*_from_hashes`` variants. Verifiers are the trust boundary: for
any input they return ``None`` or raise :class:`MerkleProofError`, nothing
else. Builders are only ever given our own data, so a bad argument there is a
bug in the caller and raises :class:`ValueError`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from protocols.errors import MerkleProofError

_HASH_SIZE = 32
_MAX_TREE_SIZE = 2**64 - 1
"""RFC 9162 carries tree sizes as uint64; bigger claims are refused, not computed on."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256 of the empty string: the root every log starts from."""


def leaf_hash(data: bytes) -> bytes:
    """The 0x00 prefix keeps an entry from ever passing for an interior node."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The 0x01 prefix keeps an interior node from ever passing for an entry."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


# --- building (our own data) -------------------------------------------------


def root(leaves: Sequence[bytes]) -> bytes:
    return root_from_hashes([leaf_hash(entry) for entry in leaves])


def root_from_hashes(hashes: Sequence[bytes]) -> bytes:
    _check_leaf_hashes(hashes)
    if not hashes:
        return EMPTY_ROOT
    return _mth(hashes, 0, len(hashes))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    return inclusion_proof_from_hashes([leaf_hash(entry) for entry in leaves], index)


def inclusion_proof_from_hashes(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[n]): siblings from the leaf up to the root."""
    _check_leaf_hashes(hashes)
    if not 0 <= index < len(hashes):
        raise ValueError(f"leaf index {index} is outside a tree of size {len(hashes)}")
    return _path(hashes, index, 0, len(hashes))


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    return consistency_proof_from_hashes([leaf_hash(entry) for entry in leaves], old_size)


def consistency_proof_from_hashes(hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(m, D[n]).

    Sizes 0 and n need no hashes: every tree extends the empty one, and a
    tree is consistent with itself exactly when the two roots are equal.
    """
    _check_leaf_hashes(hashes)
    if not 0 <= old_size <= len(hashes):
        raise ValueError(f"old size {old_size} is outside 0..{len(hashes)}")
    if old_size in (0, len(hashes)):
        return []
    return _subproof(hashes, old_size, 0, len(hashes), complete=True)


def _check_leaf_hashes(hashes: Sequence[bytes]) -> None:
    # A stored hash of the wrong length would silently give a root nobody else gets.
    for i, h in enumerate(hashes):
        if len(h) != _HASH_SIZE:
            raise ValueError(f"leaf hash {i} is {len(h)} bytes, not {_HASH_SIZE}")


def _split(n: int) -> int:
    """RFC 9162's k: the largest power of two smaller than ``n`` (``n`` > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) for a non-empty range; ranges, not slices, keep it O(n)."""
    if hi - lo == 1:
        return hashes[lo]
    mid = lo + _split(hi - lo)
    return node_hash(_mth(hashes, lo, mid), _mth(hashes, mid, hi))


def _path(hashes: Sequence[bytes], m: int, lo: int, hi: int) -> list[bytes]:
    if hi - lo == 1:
        return []
    k = _split(hi - lo)
    if m < k:
        return [*_path(hashes, m, lo, lo + k), _mth(hashes, lo + k, hi)]
    return [*_path(hashes, m - k, lo + k, hi), _mth(hashes, lo, lo + k)]


def _subproof(hashes: Sequence[bytes], m: int, lo: int, hi: int, *, complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[lo:hi], b); ``complete`` is the RFC's b.

    b stays true while D[0:m] is the left edge of the current subtree: then
    its root is the old root the verifier already holds and is left out.
    """
    n = hi - lo
    if m == n:
        return [] if complete else [_mth(hashes, lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(hashes, m, lo, lo + k, complete=complete), _mth(hashes, lo + k, hi)]
    return [*_subproof(hashes, m - k, lo + k, hi, complete=False), _mth(hashes, lo, lo + k)]


# --- verifying (peer data) ---------------------------------------------------


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    if not isinstance(leaf, bytes):
        raise MerkleProofError("inclusion proof: leaf entry is not bytes")
    verify_inclusion_hash(leaf_hash(leaf), index, size, proof, root)


def verify_inclusion_hash(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: recompute the root from the leaf up; it must be ``root``."""
    what = "inclusion proof"
    size = _check_size(size, what, "tree size")
    index = _check_size(index, what, "leaf index")
    _check_hash(leaf_hash, what, "leaf hash")
    _check_hash(root, what, "root")
    if index >= size:
        raise MerkleProofError(f"{what}: leaf index {index} is not below tree size {size}")
    want = _inclusion_length(index, size)
    path = _check_proof(proof, want, what, f"leaf {index} in a tree of size {size}")

    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            raise MerkleProofError(f"{what}: longer than the tree is high")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError(f"{what}: shorter than the tree is high")
    if not hmac.compare_digest(r, root):
        raise MerkleProofError(f"{what}: leaf {index} does not lead to the root of size {size}")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: one path must rebuild both the old root and the new one.

    The RFC defines the algorithm for 0 < old < new only; the two edges are
    closed here so no caller has to special-case them: from size 0 the old
    root must be the empty root, between equal sizes the roots must be equal,
    and in both cases the proof must be empty.
    """
    what = "consistency proof"
    old_size = _check_size(old_size, what, "old size")
    new_size = _check_size(new_size, what, "new size")
    _check_hash(old_root, what, "old root")
    _check_hash(new_root, what, "new root")
    if old_size > new_size:
        raise MerkleProofError(f"{what}: old size {old_size} is above new size {new_size}")
    if old_size in (0, new_size):
        _check_proof(proof, 0, what, f"sizes {old_size} and {new_size}")
        if old_size == 0 and not hmac.compare_digest(old_root, EMPTY_ROOT):
            raise MerkleProofError(f"{what}: old root is not the root of the empty tree")
        if old_size == new_size and not hmac.compare_digest(old_root, new_root):
            raise MerkleProofError(f"{what}: different roots for the same size {old_size}")
        return
    want = _consistency_length(old_size, new_size)
    path = _check_proof(proof, want, what, f"sizes {old_size} and {new_size}")

    if old_size & (old_size - 1) == 0:
        path = [old_root, *path]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MerkleProofError(f"{what}: longer than the new tree is high")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError(f"{what}: shorter than the new tree is high")
    if not hmac.compare_digest(fr, old_root):
        raise MerkleProofError(f"{what}: does not lead to the old root of size {old_size}")
    if not hmac.compare_digest(sr, new_root):
        raise MerkleProofError(f"{what}: does not lead to the new root of size {new_size}")


def _inclusion_length(index: int, size: int) -> int:
    """Hashes in PATH(index, D[size]), as in Go's tlog / transparency-dev/merkle.

    ``inner`` levels lie below the point where the paths to ``index`` and to
    the last leaf part; above it, one hash per left sibling on the border.
    """
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_length(old_size: int, new_size: int) -> int:
    """Hashes in PROOF(old_size, D[new_size]) for 0 < old_size < new_size.

    The proof is the inclusion path of leaf old_size - 1 cut at the level of
    the largest complete subtree D[0:old_size] ends with, plus that
    subtree's root unless it is the whole old tree (old_size a power of two).
    """
    shift = (old_size & -old_size).bit_length() - 1
    index = old_size - 1
    inner = (index ^ (new_size - 1)).bit_length()
    seed = 0 if old_size == 1 << shift else 1
    return seed + inner - shift + (index >> inner).bit_count()


def _check_size(value: object, what: str, name: str) -> int:
    if not isinstance(value, int):
        raise MerkleProofError(f"{what}: {name} is not an integer")
    if value < 0:
        raise MerkleProofError(f"{what}: {name} {value} is negative")
    if value > _MAX_TREE_SIZE:
        raise MerkleProofError(f"{what}: {name} is above 2^64 - 1")
    return value


def _check_hash(value: object, what: str, name: str) -> None:
    if not isinstance(value, bytes):
        raise MerkleProofError(f"{what}: {name} is not bytes")
    if len(value) != _HASH_SIZE:
        raise MerkleProofError(f"{what}: {name} is {len(value)} bytes, not {_HASH_SIZE}")


def _check_proof(proof: object, want: int, what: str, of: str) -> list[bytes]:
    """The proof as a list of hashes, if it has exactly ``want`` of them."""
    # bytes and str are sequences too, of the wrong things.
    if not isinstance(proof, Sequence) or isinstance(proof, (bytes, bytearray, str)):
        raise MerkleProofError(f"{what}: proof is not a list of hashes")
    if len(proof) != want:
        raise MerkleProofError(f"{what}: has {len(proof)} hashes; the proof for {of} has {want}")
    for i, h in enumerate(proof):
        _check_hash(h, what, f"proof[{i}]")
    return list(proof)
