//! RFC 9162 §2.1 Merkle tree maths over audit events: leaf and node hashing, the
//! compact frontier kept with the chain head, inclusion and consistency proofs
//! (generation and verification). Where leaves come from is the caller's job.

use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 value.
pub type Hash = [u8; 32];

/// Most hashes a proof may hold: a tree of 2^64 leaves needs at most 64 (+1 for consistency).
pub const MAX_PROOF_LEN: usize = 65;

/// Why a proof or a frontier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// The sizes of a consistency proof are not `0 < from <= to`.
    #[error("cannot prove consistency from size {from} to size {to}")]
    BadSizes { from: u64, to: u64 },
    /// The proof has the wrong number of hashes for the sizes it claims.
    #[error("proof has {got} hashes, expected {want}")]
    WrongLength { got: usize, want: usize },
    /// The proof does not lead to the expected root.
    #[error("proof does not match the root hash")]
    RootMismatch,
    /// A stored frontier does not fit its tree size.
    #[error("frontier has {got} hashes, a tree of size {size} needs {want}")]
    BadFrontier { got: usize, want: usize, size: u64 },
}

/// `SHA-256(0x00 || body)`.
pub fn leaf_hash(body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(body);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: `SHA-256()`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The roots of the perfect subtrees that make up a tree of `size` leaves,
/// largest (leftmost) first: one per set bit of `size`. Appending is O(log n)
/// and needs nothing else, so the store keeps this next to the chain head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Rebuilds a stored frontier, checking it fits `size`.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Result<Self, MerkleError> {
        let want = size.count_ones() as usize;
        if nodes.len() != want {
            return Err(MerkleError::BadFrontier {
                got: nodes.len(),
                want,
                size,
            });
        }
        Ok(Frontier { size, nodes })
    }

    /// Decodes the stored form (concatenated hashes).
    pub fn decode(size: u64, bytes: &[u8]) -> Result<Self, MerkleError> {
        if !bytes.len().is_multiple_of(32) {
            return Err(MerkleError::BadFrontier {
                got: bytes.len() / 32,
                want: size.count_ones() as usize,
                size,
            });
        }
        let nodes = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0u8; 32]))
            .collect();
        Self::from_parts(size, nodes)
    }

    /// The stored form: the subtree roots concatenated.
    pub fn encode(&self) -> Vec<u8> {
        self.nodes.concat()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut k = self.size;
        // Each trailing 1 bit of the old size is a subtree of the new leaf's height: merge.
        while k & 1 == 1 {
            let left = self.nodes.pop().unwrap_or([0u8; 32]);
            h = node_hash(&left, &h);
            k >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// Appends the leaf for an event body.
    pub fn push_body(&mut self, body: &[u8]) {
        self.push(leaf_hash(body));
    }

    /// The tree head (RFC 9162 MTH).
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// Largest power of two strictly below `n` (n >= 2).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Source of subtree hashes for proof generation: `MTH(D[start..end])`.
pub trait Subtrees {
    /// The RFC 9162 hash of leaves `start..end` (`start < end`).
    fn mth(&mut self, start: u64, end: u64) -> Hash;
}

/// All leaf hashes in memory: fine for a verifier that read every event anyway.
impl Subtrees for &[Hash] {
    fn mth(&mut self, start: u64, end: u64) -> Hash {
        mth_of(&self[start as usize..end as usize])
    }
}

fn mth_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth_of(&leaves[..k]), &mth_of(&leaves[k..]))
        }
    }
}

/// RFC 9162 §2.1.3.1 `PATH(index, D[size])`, leaf side first.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    tree: &mut dyn Subtrees,
) -> Result<Vec<Hash>, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    path(index, 0, size, tree, &mut out);
    Ok(out)
}

fn path(m: u64, start: u64, end: u64, tree: &mut dyn Subtrees, out: &mut Vec<Hash>) {
    let n = end - start;
    if n == 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, start, start + k, tree, out);
        out.push(tree.mth(start + k, end));
    } else {
        path(m - k, start + k, end, tree, out);
        out.push(tree.mth(start, start + k));
    }
}

/// RFC 9162 §2.1.4.1 `PROOF(from, D[to])`.
pub fn consistency_proof(
    from: u64,
    to: u64,
    tree: &mut dyn Subtrees,
) -> Result<Vec<Hash>, MerkleError> {
    if from == 0 || from > to {
        return Err(MerkleError::BadSizes { from, to });
    }
    let mut out = Vec::new();
    subproof(from, 0, to, true, tree, &mut out);
    Ok(out)
}

fn subproof(
    m: u64,
    start: u64,
    end: u64,
    whole: bool,
    tree: &mut dyn Subtrees,
    out: &mut Vec<Hash>,
) {
    let n = end - start;
    if m == n {
        if !whole {
            out.push(tree.mth(start, end));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, start, start + k, whole, tree, out);
        out.push(tree.mth(start + k, end));
    } else {
        subproof(m - k, start + k, end, false, tree, out);
        out.push(tree.mth(start, start + k));
    }
}

/// RFC 9162 §2.1.3.2: checks that `leaf` is at `index` in the tree of `size` with `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(MerkleError::WrongLength {
                got: proof.len(),
                want: inclusion_len(index, size),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(MerkleError::WrongLength {
            got: proof.len(),
            want: inclusion_len(index, size),
        });
    }
    if &r != root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

fn inclusion_len(index: u64, size: u64) -> usize {
    let (mut f, mut s, mut n) = (index, size - 1, 0);
    while s != 0 {
        if f & 1 == 0 && f == s {
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        }
        f >>= 1;
        s >>= 1;
        n += 1;
    }
    n
}

/// RFC 9162 §2.1.4.2: checks that the tree `(to, to_root)` extends `(from, from_root)`.
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if from == 0 || from > to {
        return Err(MerkleError::BadSizes { from, to });
    }
    if from == to {
        if !proof.is_empty() {
            return Err(MerkleError::WrongLength {
                got: proof.len(),
                want: 0,
            });
        }
        return if from_root == to_root {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        };
    }
    if proof.is_empty() || proof.len() > MAX_PROOF_LEN {
        return Err(MerkleError::WrongLength {
            got: proof.len(),
            want: 1,
        });
    }
    // A power-of-two `from` is itself a node of the new tree: prepend its root.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if from.is_power_of_two() {
        path.push(*from_root);
    }
    path.extend_from_slice(proof);
    let (mut f_n, mut s_n) = (from - 1, to - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if s_n == 0 {
            return Err(MerkleError::WrongLength {
                got: proof.len(),
                want: path.len() - 1,
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(MerkleError::WrongLength {
            got: proof.len(),
            want: proof.len() + 1,
        });
    }
    if &fr != from_root || &sr != to_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Leaves per block below which [`SubtreeCache`] keeps no hashes.
pub const BLOCK: u64 = 256;

/// Roots of every complete, aligned block of [`BLOCK`] leaves and of every
/// complete subtree above them, plus the leaves of the last, incomplete
/// block: about 0.25 bytes per event, so proofs over millions of events need
/// no full scan. Hashes inside complete blocks are fetched on demand.
#[derive(Debug, Clone, Default)]
pub struct SubtreeCache {
    /// `levels[j][i]` is the root of leaves `i*BLOCK*2^j .. (i+1)*BLOCK*2^j`.
    levels: Vec<Vec<Hash>>,
    /// Leaves after the last complete block.
    tail: Vec<Hash>,
}

impl SubtreeCache {
    /// An empty cache.
    pub fn new() -> Self {
        SubtreeCache::default()
    }

    /// Leaves seen so far.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64) * BLOCK + self.tail.len() as u64
    }

    /// Appends the next leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.tail.push(leaf);
        if self.tail.len() as u64 == BLOCK {
            let mut h = mth_of(&self.tail);
            self.tail.clear();
            let mut j = 0;
            loop {
                if self.levels.len() == j {
                    self.levels.push(Vec::new());
                }
                self.levels[j].push(h);
                let len = self.levels[j].len();
                if !len.is_multiple_of(2) {
                    break;
                }
                h = node_hash(&self.levels[j][len - 2], &self.levels[j][len - 1]);
                j += 1;
            }
        }
    }

    /// `MTH(D[start..end])`; `block_leaves(b)` returns the [`BLOCK`] leaf
    /// hashes of complete block `b` when a range ends inside one.
    pub fn mth(
        &self,
        start: u64,
        end: u64,
        block_leaves: &mut dyn FnMut(u64) -> Vec<Hash>,
    ) -> Hash {
        let n = end - start;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && start.is_multiple_of(n) {
            if n >= BLOCK && end <= self.size() - self.tail.len() as u64 {
                let j = (n / BLOCK).trailing_zeros() as usize;
                if let Some(h) = self.levels.get(j).and_then(|l| l.get((start / n) as usize)) {
                    return *h;
                }
            }
            if n < BLOCK {
                let block = start / BLOCK;
                let full = self.size() / BLOCK;
                let off = (start % BLOCK) as usize;
                let leaves = if block >= full {
                    self.tail.clone()
                } else {
                    block_leaves(block)
                };
                if leaves.len() >= off + n as usize {
                    return mth_of(&leaves[off..off + n as usize]);
                }
            }
        }
        if n == 1 {
            // Out of range or a missing block: a value no honest proof uses.
            return [0u8; 32];
        }
        let k = split(n);
        node_hash(
            &self.mth(start, start + k, block_leaves),
            &self.mth(start + k, end, block_leaves),
        )
    }
}

/// [`Subtrees`] over a [`SubtreeCache`] and a block reader.
pub struct CachedTree<'a> {
    /// The cache of block and subtree roots.
    pub cache: &'a SubtreeCache,
    /// Reads the leaf hashes of one complete block.
    pub block_leaves: &'a mut dyn FnMut(u64) -> Vec<Hash>,
}

impl Subtrees for CachedTree<'_> {
    fn mth(&mut self, start: u64, end: u64) -> Hash {
        self.cache.mth(start, end, self.block_leaves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn root_of(l: &[Hash]) -> Hash {
        let mut t: &[Hash] = l;
        if l.is_empty() {
            empty_root()
        } else {
            t.mth(0, l.len() as u64)
        }
    }

    #[test]
    fn hashing_matches_rfc_9162_definitions() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // MTH({""}) = SHA-256(0x00), the first vector of the CT test suite.
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn frontier_root_equals_recursive_root() {
        let l = leaves(300);
        let mut f = Frontier::new();
        for (i, h) in l.iter().enumerate() {
            f.push(*h);
            assert_eq!(f.root(), root_of(&l[..=i]), "size {}", i + 1);
            let g = Frontier::decode(f.size(), &f.encode()).unwrap();
            assert_eq!(g, f);
        }
        assert!(Frontier::decode(5, &[0u8; 32]).is_err());
    }

    #[test]
    fn cache_agrees_with_leaves() {
        let l = leaves(3 * BLOCK + 17);
        let mut c = SubtreeCache::new();
        for h in &l {
            c.push(*h);
        }
        let mut read = |b: u64| l[(b * BLOCK) as usize..((b + 1) * BLOCK) as usize].to_vec();
        let mut t = CachedTree {
            cache: &c,
            block_leaves: &mut read,
        };
        let mut s: &[Hash] = &l;
        for (a, b) in [
            (0, l.len() as u64),
            (0, 512),
            (512, 785),
            (3, 4),
            (256, 768),
        ] {
            assert_eq!(t.mth(a, b), s.mth(a, b), "{a}..{b}");
        }
        let n = l.len() as u64;
        let p1 = consistency_proof(100, n, &mut t).unwrap();
        let p2 = consistency_proof(100, n, &mut s).unwrap();
        assert_eq!(p1, p2);
    }

    proptest! {
        #[test]
        fn inclusion_proofs_verify_and_tampering_fails(n in 1u64..300, i in 0u64..300, bit in 0usize..256) {
            let i = i % n;
            let l = leaves(n);
            let root = root_of(&l);
            let mut t: &[Hash] = &l;
            let p = inclusion_proof(i, n, &mut t).unwrap();
            prop_assert!(verify_inclusion(i, n, &l[i as usize], &p, &root).is_ok());
            let mut bad_leaf = l[i as usize];
            bad_leaf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify_inclusion(i, n, &bad_leaf, &p, &root).is_err());
            if !p.is_empty() {
                let mut q = p.clone();
                let k = bit % q.len();
                q[k][bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_inclusion(i, n, &l[i as usize], &q, &root).is_err());
            }
            // The proof does not hold for the tree one leaf larger.
            let l2 = leaves(n + 1);
            prop_assert!(verify_inclusion(i, n + 1, &l[i as usize], &p, &root_of(&l2)).is_err());
        }

        #[test]
        fn consistency_proofs_verify_and_tampering_fails(n in 1u64..300, m in 1u64..300, bit in 0usize..256) {
            let m = (m % n) + 1;
            let l = leaves(n);
            let (rm, rn) = (root_of(&l[..m as usize]), root_of(&l));
            let mut t: &[Hash] = &l;
            let p = consistency_proof(m, n, &mut t).unwrap();
            prop_assert!(p.len() <= MAX_PROOF_LEN);
            prop_assert!(verify_consistency(m, n, &rm, &rn, &p).is_ok());
            let mut bad = rm;
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify_consistency(m, n, &bad, &rn, &p).is_err());
            prop_assert!(verify_consistency(m, n, &rm, &bad, &p).is_err());
            if !p.is_empty() {
                let mut q = p.clone();
                let k = bit % q.len();
                q[k][bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(m, n, &rm, &rn, &q).is_err());
            }
            // Nor for other sizes with their true roots.
            let l2 = leaves(n + 1);
            prop_assert!(verify_consistency(m, n + 1, &rm, &root_of(&l2), &p).is_err());
            if m > 1 {
                let r1 = root_of(&l[..m as usize - 1]);
                prop_assert!(verify_consistency(m - 1, n, &r1, &rn, &p).is_err());
            }
            // A different history of the same size is not an extension.
            let mut other = l.clone();
            other[0][0] ^= 1;
            let ro = root_of(&other[..m as usize]);
            prop_assert!(verify_consistency(m, n, &ro, &rn, &p).is_err());
        }
    }
}
