//! X11 authority files (`~/.Xauthority`, `$XAUTHORITY`).
//!
//! The file is a plain sequence of entries, each made of a big-endian `u16` family followed
//! by four counted strings (big-endian `u16` length, then the bytes): address, display
//! number (decimal ASCII), authorization name (e.g. `MIT-MAGIC-COOKIE-1`) and data.
//!
//! Inside the sandbox the hostname is unchanged but the network namespace is new, so the
//! address Xlib derives for the display may not match the host's entries. Like Flatpak, we
//! give the sandbox a file holding only the entries for the display in use, rewritten to
//! `FamilyWild`, which libXau matches whatever family and address the client looks up. This
//! also keeps cookies for the host's other displays out of the sandbox.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `FamilyInternet`: IPv4 address.
pub const FAMILY_INTERNET: u16 = 0;
/// `FamilyInternet6`: IPv6 address.
pub const FAMILY_INTERNET6: u16 = 6;
/// `FamilyLocal`: local connection, the address is the hostname.
pub const FAMILY_LOCAL: u16 = 256;
/// `FamilyWild`: matches any family and address.
pub const FAMILY_WILD: u16 = 0xFFFF;

/// One entry of an X authority file. Fields are raw bytes because the format carries no
/// encoding (addresses are binary for the Internet families).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XauthEntry {
    /// Address family (`FAMILY_*`).
    pub family: u16,
    /// Address: hostname for `FamilyLocal`, 4 or 16 raw bytes for the Internet families.
    pub address: Vec<u8>,
    /// Display number as decimal ASCII, e.g. `b"0"`.
    pub number: Vec<u8>,
    /// Authorization protocol name, e.g. `b"MIT-MAGIC-COOKIE-1"`.
    pub name: Vec<u8>,
    /// Authorization data (the secret cookie).
    pub data: Vec<u8>,
}

/// Error reading, parsing or writing an X authority file.
#[derive(Debug, thiserror::Error)]
pub enum XauthError {
    /// The data ends in the middle of an entry.
    #[error("X authority data truncated at offset {offset} (reading {field})")]
    Truncated {
        /// Byte offset where the missing field starts.
        offset: usize,
        /// The field being read.
        field: &'static str,
    },
    /// A file ends in the middle of an entry.
    #[error("X authority file {}: truncated at offset {offset} (reading {field})", .path.display())]
    TruncatedFile {
        /// The file.
        path: PathBuf,
        /// Byte offset where the missing field starts.
        offset: usize,
        /// The field being read.
        field: &'static str,
    },
    /// Reading the source file failed.
    #[error("cannot read X authority file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Creating or writing the destination file failed.
    #[error("cannot write X authority file {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The destination exists and is not a regular file.
    #[error("cannot write X authority file {}: not a regular file", .path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
}

/// Cursor over the input that reports where it ran out.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], XauthError> {
        let bytes = self
            .pos
            .checked_add(n)
            .and_then(|end| self.data.get(self.pos..end))
            .ok_or(XauthError::Truncated {
                offset: self.pos,
                field,
            })?;
        self.pos += n;
        Ok(bytes)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, XauthError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn counted(&mut self, field: &'static str) -> Result<Vec<u8>, XauthError> {
        let len = self.u16(field)?;
        Ok(self.take(usize::from(len), field)?.to_vec())
    }
}

/// Parses the contents of an X authority file. Empty input yields no entries; input that
/// ends inside an entry is an error naming the offset.
pub fn parse(data: &[u8]) -> Result<Vec<XauthEntry>, XauthError> {
    let mut r = Reader { data, pos: 0 };
    let mut entries = Vec::new();
    while r.pos < data.len() {
        entries.push(XauthEntry {
            family: r.u16("family")?,
            address: r.counted("address")?,
            number: r.counted("display number")?,
            name: r.counted("auth name")?,
            data: r.counted("auth data")?,
        });
    }
    Ok(entries)
}

/// Serializes entries in the X authority file format.
///
/// A field longer than 65535 bytes cannot be encoded; such entries (which [`parse`] can
/// never produce) are skipped rather than written with a corrupted length.
pub fn serialize(entries: &[XauthEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let fields = [&e.address, &e.number, &e.name, &e.data];
        if fields.iter().any(|f| u16::try_from(f.len()).is_err()) {
            continue;
        }
        out.extend_from_slice(&e.family.to_be_bytes());
        for f in fields {
            // Length checked above.
            out.extend_from_slice(&(f.len() as u16).to_be_bytes());
            out.extend_from_slice(f);
        }
    }
    out
}

/// Whether an entry's address designates this machine for its family.
fn is_local(e: &XauthEntry, hostname: &[u8]) -> bool {
    const LOOPBACK4: [u8; 4] = [127, 0, 0, 1];
    const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    match e.family {
        FAMILY_LOCAL => e.address == hostname,
        FAMILY_WILD => true,
        FAMILY_INTERNET => e.address == LOOPBACK4,
        FAMILY_INTERNET6 => e.address == LOOPBACK6,
        _ => false,
    }
}

/// Keeps the entries for display `display` of this machine (`FamilyLocal` with address
/// `hostname`, `FamilyWild`, or an Internet family with a loopback address) and rewrites
/// their family to `FamilyWild` so they match whatever address the sandboxed client looks
/// up. Addresses are left as they are (libXau ignores them for `FamilyWild`); order is kept.
pub fn select_for_display(
    entries: &[XauthEntry],
    display: u32,
    hostname: &[u8],
) -> Vec<XauthEntry> {
    let number = display.to_string();
    entries
        .iter()
        .filter(|e| e.number == number.as_bytes() && is_local(e, hostname))
        .map(|e| XauthEntry {
            family: FAMILY_WILD,
            ..e.clone()
        })
        .collect()
}

/// Reads the authority file `src`, keeps the entries for `display` (see
/// [`select_for_display`]) and writes them to `dst` with mode 0600, creating it or
/// truncating it; a symlink at `dst` is refused (`O_NOFOLLOW`). Returns the number of
/// entries written (possibly zero, in which case `dst` is empty).
pub fn write_for_sandbox(
    src: &Path,
    display: u32,
    hostname: &[u8],
    dst: &Path,
) -> Result<usize, XauthError> {
    let raw = std::fs::read(src).map_err(|source| XauthError::Read {
        path: src.to_path_buf(),
        source,
    })?;
    let entries = parse(&raw).map_err(|e| match e {
        XauthError::Truncated { offset, field } => XauthError::TruncatedFile {
            path: src.to_path_buf(),
            offset,
            field,
        },
        other => other,
    })?;
    let selected = select_for_display(&entries, display, hostname);
    let bytes = serialize(&selected);

    let write_err = |source| XauthError::Write {
        path: dst.to_path_buf(),
        source,
    };
    // O_NOFOLLOW: never write the cookie through a symlink planted at dst. O_NONBLOCK: a FIFO
    // at dst fails to open instead of blocking until someone reads it; no effect on files.
    let file: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(dst)
        .map_err(write_err)?;
    let meta = file.metadata().map_err(write_err)?;
    if !meta.is_file() {
        return Err(XauthError::NotRegular {
            path: dst.to_path_buf(),
        });
    }
    // mode() only applies when the file is created: tighten a pre-existing file too, before
    // the secret goes in.
    if meta.permissions().mode() & 0o7777 != 0o600 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(write_err)?;
    }
    (&file).write_all(&bytes).map_err(write_err)?;
    Ok(selected.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(family: u16, address: &[u8], number: &[u8], data: &[u8]) -> XauthEntry {
        XauthEntry {
            family,
            address: address.to_vec(),
            number: number.to_vec(),
            name: b"MIT-MAGIC-COOKIE-1".to_vec(),
            data: data.to_vec(),
        }
    }

    fn sample() -> Vec<XauthEntry> {
        vec![
            entry(FAMILY_LOCAL, b"myhost", b"0", b"cookie-local-0"),
            entry(FAMILY_LOCAL, b"myhost", b"1", b"cookie-local-1"),
            entry(FAMILY_LOCAL, b"otherhost", b"0", b"cookie-other"),
            entry(FAMILY_WILD, b"", b"0", b"cookie-wild-0"),
            entry(FAMILY_INTERNET, &[127, 0, 0, 1], b"0", b"cookie-lo4"),
            entry(FAMILY_INTERNET, &[192, 168, 1, 2], b"0", b"cookie-lan"),
            entry(
                FAMILY_INTERNET6,
                &std::net::Ipv6Addr::LOCALHOST.octets(),
                b"0",
                b"cookie-lo6",
            ),
            entry(
                FAMILY_INTERNET6,
                &std::net::Ipv6Addr::UNSPECIFIED.octets(),
                b"0",
                b"cookie-any6",
            ),
            entry(FAMILY_LOCAL, b"myhost", b"10", b"cookie-local-10"),
        ]
    }

    #[test]
    fn wire_format() {
        let e = entry(FAMILY_LOCAL, b"h", b"0", b"\x01\x02");
        let bytes = serialize(std::slice::from_ref(&e));
        let mut expected = vec![0x01, 0x00, 0, 1, b'h', 0, 1, b'0', 0, 18];
        expected.extend_from_slice(b"MIT-MAGIC-COOKIE-1");
        expected.extend_from_slice(&[0, 2, 1, 2]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn round_trip() {
        let entries = sample();
        let bytes = serialize(&entries);
        assert_eq!(parse(&bytes).unwrap(), entries);
        assert_eq!(serialize(&parse(&bytes).unwrap()), bytes);
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn truncated_input_names_offset() {
        let bytes = serialize(&[entry(FAMILY_LOCAL, b"myhost", b"0", b"secret")]);
        // Cut inside the auth data of the first entry.
        let cut = &bytes[..bytes.len() - 2];
        match parse(cut) {
            Err(XauthError::Truncated { offset, field }) => {
                assert_eq!(field, "auth data");
                assert_eq!(offset, bytes.len() - 6); // start of the 6 data bytes
            }
            other => panic!("unexpected {other:?}"),
        }
        // A lone byte after a complete entry: the next family is cut.
        let mut extra = bytes.clone();
        extra.push(0);
        let err = parse(&extra).unwrap_err();
        assert!(
            matches!(err, XauthError::Truncated { offset, field: "family" } if offset == bytes.len())
        );
        assert!(
            err.to_string().contains(&format!("offset {}", bytes.len())),
            "{err}"
        );
    }

    #[test]
    fn selection_by_display_and_family() {
        let got = select_for_display(&sample(), 0, b"myhost");
        let cookies: Vec<&[u8]> = got.iter().map(|e| e.data.as_slice()).collect();
        assert_eq!(
            cookies,
            [
                &b"cookie-local-0"[..],
                b"cookie-wild-0",
                b"cookie-lo4",
                b"cookie-lo6"
            ],
            "other display, other host, LAN and unspecified addresses must be dropped"
        );

        let got = select_for_display(&sample(), 1, b"myhost");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, b"cookie-local-1");

        // Display 1 must not match "10" and vice versa.
        let got = select_for_display(&sample(), 10, b"myhost");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, b"cookie-local-10");

        assert!(select_for_display(&sample(), 5, b"myhost").is_empty());
    }

    #[test]
    fn selected_entries_become_wild() {
        let got = select_for_display(&sample(), 0, b"myhost");
        assert!(got.iter().all(|e| e.family == FAMILY_WILD));
        // Addresses and the rest are preserved.
        assert_eq!(got[0].address, b"myhost");
        assert_eq!(got[2].address, [127, 0, 0, 1]);
        assert_eq!(got[0].name, b"MIT-MAGIC-COOKIE-1");
    }

    #[test]
    fn write_for_sandbox_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("Xauthority");
        let dst = dir.path().join("sandbox-Xauthority");
        std::fs::write(&src, serialize(&sample())).unwrap();

        // A pre-existing, world-readable destination with stale content gets truncated and
        // tightened to 0600.
        std::fs::write(&dst, vec![0xAA; 4096]).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).unwrap();

        let n = write_for_sandbox(&src, 0, b"myhost", &dst).unwrap();
        assert_eq!(n, 4);
        let meta = std::fs::metadata(&dst).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let written = parse(&std::fs::read(&dst).unwrap()).unwrap();
        assert_eq!(written, select_for_display(&sample(), 0, b"myhost"));

        // Freshly created file.
        let fresh = dir.path().join("fresh");
        assert_eq!(write_for_sandbox(&src, 1, b"myhost", &fresh).unwrap(), 1);
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    fn write_for_sandbox_errors_name_paths() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let dst = dir.path().join("out");
        let err = write_for_sandbox(&missing, 0, b"h", &dst).unwrap_err();
        assert!(matches!(err, XauthError::Read { .. }));
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );

        let bad = dir.path().join("bad");
        std::fs::write(&bad, [0x01, 0x00, 0x00]).unwrap();
        let err = write_for_sandbox(&bad, 0, b"h", &dst).unwrap_err();
        assert!(
            matches!(err, XauthError::TruncatedFile { offset: 2, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&bad.display().to_string()),
            "{err}"
        );

        // A symlink at the destination is refused rather than followed.
        let src = dir.path().join("src");
        std::fs::write(&src, serialize(&sample())).unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_for_sandbox(&src, 0, b"myhost", &link).unwrap_err();
        assert!(matches!(err, XauthError::Write { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&link.display().to_string()),
            "{err}"
        );
        assert!(!target.exists());
    }
}
