//! Reading an audit file at open: where its last complete line ends, how many lines it
//! has, its last two lines; and cutting off a torn end (a write stopped by a crash, a
//! power loss or a full disk that could not be cut back), so that the chain goes on
//! from the last line that was written whole.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};

/// What [`scan`] found.
#[derive(Debug, Default)]
pub(super) struct Scanned {
    /// The file's length once a torn end is cut off.
    pub(super) len: u64,
    /// Complete, non-empty lines.
    pub(super) lines: u64,
    /// The last line (without its newline).
    pub(super) last: Option<Vec<u8>>,
    /// The line before it.
    pub(super) before_last: Option<Vec<u8>>,
    /// What was cut off.
    pub(super) cut: Option<Cut>,
}

/// A torn end that was cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cut {
    /// Where the file now ends.
    pub(super) offset: u64,
    /// Bytes removed.
    pub(super) bytes: u64,
}

/// Reads `file` from the start and cuts off its torn end: bytes after the last newline,
/// and a last line that is not a JSON object (what a crash can leave: half a line, or
/// a block of zeros).
pub(super) fn scan(file: &mut File) -> io::Result<Scanned> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(&*file);
    let mut scanned = Scanned::default();
    // Where the last complete line starts, and where complete lines end.
    let mut last_start = 0u64;
    let mut end = 0u64;
    let mut torn = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)? as u64;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            torn = true;
            break;
        }
        line.pop();
        if !line.is_empty() {
            scanned.lines += 1;
            last_start = end;
            // Rotate the buffers, reusing the allocation of the line that drops out.
            if let Some(previous) = scanned.last.replace(std::mem::take(&mut line)) {
                if let Some(old) = scanned.before_last.replace(previous) {
                    line = old;
                }
            }
        }
        end += n;
    }
    drop(reader);
    let file_len = file.metadata()?.len();
    let mut keep = if torn { end } else { file_len.min(end) };
    let whole = scanned.last.as_deref().is_none_or(|l| {
        serde_json::from_slice::<serde_json::Value>(l).is_ok_and(|v| v.is_object())
    });
    if !whole {
        keep = last_start;
        scanned.lines -= 1;
        scanned.last = scanned.before_last.take();
    }
    if keep < file_len {
        file.set_len(keep)?;
        scanned.cut = Some(Cut {
            offset: keep,
            bytes: file_len - keep,
        });
    }
    scanned.len = keep;
    Ok(scanned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scanned(contents: &[u8]) -> (Scanned, Vec<u8>) {
        let mut file = tempfile_with(contents);
        let scanned = scan(&mut file).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut rest).unwrap();
        (scanned, rest)
    }

    fn tempfile_with(contents: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(contents).unwrap();
        file
    }

    #[test]
    fn a_whole_file_is_left_alone() {
        let (s, rest) = scanned(b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!((s.lines, s.len, s.cut), (2, 16, None));
        assert_eq!(s.last.as_deref(), Some(&b"{\"a\":2}"[..]));
        assert_eq!(s.before_last.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(rest.len(), 16);
    }

    #[test]
    fn a_torn_end_is_cut_off() {
        let (s, rest) = scanned(b"{\"a\":1}\n{\"a\":2}\n{\"a\":");
        assert_eq!(s.lines, 2);
        assert_eq!(
            s.cut,
            Some(Cut {
                offset: 16,
                bytes: 5
            })
        );
        assert_eq!(rest, b"{\"a\":1}\n{\"a\":2}\n");
        // A block of zeros with a newline after it (a crash on some file systems).
        let (s, rest) = scanned(b"{\"a\":1}\n\0\0\0\0\n");
        assert_eq!(
            (s.lines, s.cut),
            (
                1,
                Some(Cut {
                    offset: 8,
                    bytes: 5
                })
            )
        );
        assert_eq!(s.last.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(rest, b"{\"a\":1}\n");
        // Nothing whole at all.
        let (s, rest) = scanned(b"{\"a");
        assert_eq!(
            (s.lines, s.last, s.cut),
            (
                0,
                None,
                Some(Cut {
                    offset: 0,
                    bytes: 3
                })
            )
        );
        assert!(rest.is_empty());
    }
}
