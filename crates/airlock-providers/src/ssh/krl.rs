//! OpenSSH key revocation lists (KRL, OpenSSH's `PROTOCOL.krl`): the bytes
//! sshd's `RevokedKeys` and `ssh-keygen -Q` read. Pure encoding, no clock and
//! no IO: the caller passes the generation time.
//!
//! Only certificate serials of one CA are revoked. The KRL is not signed:
//! sshd never checks KRL signatures and OpenSSH 9.4+ refuses to load a KRL that
//! carries one, so the file must reach servers over a trusted channel.

const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
const FORMAT_VERSION: u32 = 1;
const SECTION_CERTIFICATES: u8 = 1;
const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_SERIAL_RANGE: u8 = 0x21;
/// A run of consecutive serials at least this long is written as one range
/// (16 bytes) rather than listed (8 bytes each).
const MIN_RANGE: u64 = 3;

/// Encodes a KRL revoking `serials` of certificates signed by the CA whose
/// public key blob (SSH wire format) is `ca_key_blob`.
///
/// Serials are sorted and deduplicated. Serial 0 is dropped: OpenSSH refuses a
/// KRL that revokes it (and then denies every login), and airlock never signs
/// serial 0. An empty list gives a header-only KRL, which revokes nothing.
/// `krl_version` is the generation time, so it grows with every new list.
pub fn encode(ca_key_blob: &[u8], serials: &[u64], generated_unix: u64, comment: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + ca_key_blob.len() + serials.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&generated_unix.to_be_bytes()); // krl_version
    out.extend_from_slice(&generated_unix.to_be_bytes()); // generated_date
    out.extend_from_slice(&0u64.to_be_bytes()); // flags: none defined
    put_string(&mut out, b""); // reserved
    put_string(&mut out, comment.as_bytes());

    let runs = runs(serials);
    if runs.is_empty() {
        return out;
    }
    let mut section = Vec::new();
    put_string(&mut section, ca_key_blob);
    put_string(&mut section, b""); // reserved
    let mut list = Vec::new();
    for (lo, hi) in runs {
        if hi - lo + 1 >= MIN_RANGE {
            let mut range = Vec::with_capacity(16);
            range.extend_from_slice(&lo.to_be_bytes());
            range.extend_from_slice(&hi.to_be_bytes());
            section.push(CERT_SERIAL_RANGE);
            put_string(&mut section, &range);
        } else {
            for s in lo..=hi {
                list.extend_from_slice(&s.to_be_bytes());
            }
        }
    }
    if !list.is_empty() {
        section.push(CERT_SERIAL_LIST);
        put_string(&mut section, &list);
    }
    out.push(SECTION_CERTIFICATES);
    put_string(&mut out, &section);
    out
}

/// Maximal runs `(lo, hi)` of consecutive serials, ascending, without 0.
fn runs(serials: &[u64]) -> Vec<(u64, u64)> {
    let mut sorted: Vec<u64> = serials.iter().copied().filter(|&s| s != 0).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for s in sorted {
        match runs.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(s) => *hi = s,
            _ => runs.push((s, s)),
        }
    }
    runs
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every input is far below 4 GiB (a key blob, a comment, at most a few
    // million serials), so the length always fits the wire's uint32.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal reader for the test: the fields in order.
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> &'a [u8] {
            let (head, tail) = self.0.split_at(n);
            self.0 = tail;
            head
        }
        fn u8(&mut self) -> u8 {
            self.take(1)[0]
        }
        fn u32(&mut self) -> u32 {
            u32::from_be_bytes(self.take(4).try_into().unwrap())
        }
        fn u64(&mut self) -> u64 {
            u64::from_be_bytes(self.take(8).try_into().unwrap())
        }
        fn string(&mut self) -> &'a [u8] {
            let n = self.u32() as usize;
            self.take(n)
        }
    }

    fn header(r: &mut Reader<'_>) -> (u64, u64, String) {
        assert_eq!(r.take(8), b"SSHKRL\n\0");
        assert_eq!(r.u32(), 1);
        let version = r.u64();
        let date = r.u64();
        assert_eq!(r.u64(), 0, "no flags");
        assert_eq!(r.string(), b"", "reserved");
        let comment = String::from_utf8(r.string().to_vec()).unwrap();
        (version, date, comment)
    }

    #[test]
    fn empty_serial_list_is_a_header_only_krl() {
        let krl = encode(b"ca", &[], 1_700_000_000, "airlock p");
        let mut r = Reader(&krl);
        assert_eq!(
            header(&mut r),
            (1_700_000_000, 1_700_000_000, "airlock p".into())
        );
        assert!(r.0.is_empty(), "no sections");
    }

    #[test]
    fn serial_zero_alone_gives_an_empty_krl() {
        assert_eq!(encode(b"ca", &[0, 0], 5, ""), encode(b"ca", &[], 5, ""));
    }

    #[test]
    fn serials_are_sorted_deduplicated_and_long_runs_become_ranges() {
        let blob = b"\x00\x00\x00\x0bssh-ed25519key";
        let krl = encode(blob, &[9, 3, 10, 11, 12, 5, 3, 0, 20, 21], 7, "c");
        let mut r = Reader(&krl);
        header(&mut r);
        assert_eq!(r.u8(), SECTION_CERTIFICATES);
        let mut s = Reader(r.string());
        assert!(r.0.is_empty(), "one certificates section");
        assert_eq!(s.string(), blob, "CA key blob");
        assert_eq!(s.string(), b"", "reserved");
        assert_eq!(s.u8(), CERT_SERIAL_RANGE);
        let mut range = Reader(s.string());
        assert_eq!((range.u64(), range.u64()), (9, 12));
        assert!(range.0.is_empty());
        assert_eq!(s.u8(), CERT_SERIAL_LIST);
        let mut list = Reader(s.string());
        let listed: Vec<u64> =
            std::iter::from_fn(|| (!list.0.is_empty()).then(|| list.u64())).collect();
        assert_eq!(listed, vec![3, 5, 20, 21]);
        assert!(s.0.is_empty());
    }

    #[test]
    fn runs_handle_the_top_of_the_serial_space() {
        assert_eq!(
            runs(&[u64::MAX, u64::MAX - 1]),
            vec![(u64::MAX - 1, u64::MAX)]
        );
        assert_eq!(runs(&[1, u64::MAX]), vec![(1, 1), (u64::MAX, u64::MAX)]);
    }
}
