//! Checking and rewriting the tar stream a session uploads into a context.
//!
//! What a session sends is untrusted: its code may have crafted the tree, or the archive. So
//! the stream is never stored as sent. [`rewrite`] reads it entry by entry and writes a new
//! archive holding only what a context may hold, or fails naming the entry at fault:
//!
//! - paths are relative and stay inside the tree: no absolute paths, no `..`;
//! - only regular files, directories, symbolic links and hard links; a symbolic link's target
//!   is relative and, read from the link's directory, stays inside the tree; a hard link names
//!   a file stored before it;
//! - set-user-id and set-group-id bits are dropped, owners become 0 (the sandbox's root);
//! - at most `max_bytes` of file content and `max_entries` entries;
//! - the include and exclude globs of the binding's policy decide what is kept.
//!
//! Downloads need no second check: a blob only ever holds what this module wrote, and the
//! agent extracts it confined to the bound path.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use globset::{GlobSet, GlobSetBuilder};
use tar::{EntryType, Header};

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// One entry may not be stored.
    #[error("refused entry {entry:?}: {reason}")]
    Refused {
        /// The entry's path as the archive names it.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The content is larger than allowed.
    #[error("the content is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The archive has too many entries.
    #[error("the content has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The stream could not be read (the session went away, or it is not a tar archive).
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    /// The new archive could not be written.
    #[error("storing the archive: {0}")]
    Write(#[source] io::Error),
}

/// Include and exclude globs, compiled.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl PathFilter {
    /// Compiles the globs; the error names the glob that does not parse.
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<PathFilter, String> {
        fn set(globs: &[String]) -> Result<Option<GlobSet>, String> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut builder = GlobSetBuilder::new();
            for glob in globs {
                let glob = globset::GlobBuilder::new(glob.trim_start_matches("./"))
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("glob {glob:?}: {e}"))?;
                builder.add(glob);
            }
            builder.build().map(Some).map_err(|e| e.to_string())
        }
        Ok(PathFilter {
            include: set(include)?,
            exclude: set(exclude)?,
        })
    }

    /// Whether `path` (relative, normalised) is kept: it or one of its parent directories
    /// matches an include glob (or there are none), and none of them matches an exclude
    /// glob. Directories are kept unless excluded, so that the tree's shape survives.
    pub(crate) fn keeps(&self, path: &Path, is_dir: bool) -> bool {
        let mut prefixes = path.ancestors().filter(|p| !p.as_os_str().is_empty());
        if let Some(exclude) = &self.exclude
            && prefixes.clone().any(|p| exclude.is_match(p))
        {
            return false;
        }
        match &self.include {
            None => true,
            Some(_) if is_dir => true,
            Some(include) => prefixes.any(|p| include.is_match(p)),
        }
    }
}

/// Bounds on what one version may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArchiveLimits {
    /// Most bytes of file content.
    pub(crate) max_bytes: u64,
    /// Most entries.
    pub(crate) max_entries: u64,
}

/// What a rewritten archive holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Entries kept.
    pub(crate) entries: u64,
    /// Bytes of file content kept.
    pub(crate) bytes: u64,
}

/// `path` as a relative path of normal components, or why it is not one. `.` alone (the
/// tree's root) is `Ok(None)`.
fn normalise(path: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains `..`".to_owned()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("the path is absolute".to_owned());
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Whether a symbolic link at `link` pointing to `target` stays inside the tree.
fn link_stays_inside(link: &Path, target: &Path) -> Result<(), String> {
    if target.is_absolute() {
        return Err(format!(
            "the link points to the absolute path {:?}",
            target.display()
        ));
    }
    let mut depth = link.components().count().saturating_sub(1) as i64;
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "the link points outside the tree ({:?})",
                        target.display()
                    ));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("the link target is absolute".to_owned());
            }
        }
    }
    Ok(())
}

/// Reads a tar stream from `input`, checks every entry and writes the kept ones as a new
/// archive to `output`.
pub(crate) fn rewrite<R: Read, W: Write>(
    input: R,
    output: W,
    filter: &PathFilter,
    limits: ArchiveLimits,
) -> Result<Summary, ArchiveError> {
    let mut archive = tar::Archive::new(input);
    let mut builder = tar::Builder::new(output);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut summary = Summary::default();
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut seen: u64 = 0;
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        let mut entry = entry.map_err(ArchiveError::Read)?;
        seen += 1;
        if seen > limits.max_entries.saturating_mul(2) {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw_path = entry.path().map_err(ArchiveError::Read)?.into_owned();
        let shown = raw_path.display().to_string();
        let refused = |reason: String| ArchiveError::Refused {
            entry: shown.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        let Some(path) = normalise(&raw_path).map_err(refused)? else {
            continue; // the root directory itself
        };
        let is_dir = kind == EntryType::Directory;
        if !filter.keeps(&path, is_dir) {
            continue;
        }
        let mode = entry.header().mode().map_err(ArchiveError::Read)? & 0o1777;
        let mtime = entry.header().mtime().unwrap_or(0);
        let mut header = Header::new_gnu();
        header.set_mode(mode);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.header().size().map_err(ArchiveError::Read)?;
                summary.bytes = summary.bytes.saturating_add(size);
                if summary.bytes > limits.max_bytes {
                    return Err(ArchiveError::TooLarge {
                        limit: limits.max_bytes,
                    });
                }
                header.set_entry_type(EntryType::Regular);
                header.set_size(size);
                let mut counted = CountingReader {
                    inner: &mut entry,
                    read: 0,
                };
                builder
                    .append_data(&mut header, &path, &mut counted)
                    .map_err(|e| classify(e, &shown))?;
                if counted.read != size {
                    return Err(ArchiveError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("entry {shown:?} ends early"),
                    )));
                }
                files.insert(path);
            }
            EntryType::Directory => {
                header.set_entry_type(EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, &path, io::empty())
                    .map_err(ArchiveError::Write)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(ArchiveError::Read)?
                    .ok_or_else(|| refused("the link has no target".to_owned()))?
                    .into_owned();
                link_stays_inside(&path, &target).map_err(refused)?;
                header.set_entry_type(EntryType::Symlink);
                header.set_size(0);
                builder
                    .append_link(&mut header, &path, &target)
                    .map_err(ArchiveError::Write)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(ArchiveError::Read)?
                    .ok_or_else(|| refused("the hard link has no target".to_owned()))?;
                let target = normalise(&target)
                    .map_err(|reason| refused(format!("the hard link's target: {reason}")))?
                    .filter(|t| files.contains(t))
                    .ok_or_else(|| {
                        refused("a hard link must name a file stored before it".to_owned())
                    })?;
                header.set_entry_type(EntryType::Link);
                header.set_size(0);
                builder
                    .append_link(&mut header, &path, &target)
                    .map_err(ArchiveError::Write)?;
            }
            other => {
                return Err(refused(format!(
                    "entries of type {other:?} (devices, fifos, …) cannot be stored"
                )));
            }
        }
        summary.entries += 1;
        if summary.entries > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
    }
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(ArchiveError::Write)?;
    Ok(summary)
}

/// An error while copying an entry's content: reading failed (the stream) or writing did.
fn classify(err: io::Error, entry: &str) -> ArchiveError {
    if err.kind() == io::ErrorKind::Other && err.to_string().starts_with("read:") {
        ArchiveError::Read(io::Error::other(format!("entry {entry:?}: {err}")))
    } else {
        ArchiveError::Write(err)
    }
}

/// Counts what is read through it, so that a short entry is caught.
struct CountingReader<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .inner
            .read(buf)
            .map_err(|e| io::Error::other(format!("read: {e}")))?;
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ArchiveLimits = ArchiveLimits {
        max_bytes: 1 << 20,
        max_entries: 100,
    };

    /// A raw archive; `entries` are (path, type, content or link target, mode).
    fn archive(entries: &[(&str, EntryType, &str, u32)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, mode) in entries {
            let mut header = Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            // Write the name raw so that hostile names survive into the archive.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if matches!(kind, EntryType::Symlink | EntryType::Link) {
                header.set_link_name(data).unwrap();
                header.set_size(0);
                header.set_cksum();
                builder.append(&header, io::empty()).unwrap();
            } else {
                header.set_size(data.len() as u64);
                header.set_cksum();
                builder.append(&header, data.as_bytes()).unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    fn listing(tar: &[u8]) -> Vec<(String, EntryType, u32)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                    e.header().mode().unwrap(),
                )
            })
            .collect()
    }

    fn run(input: &[u8], filter: &PathFilter) -> Result<(Vec<u8>, Summary), ArchiveError> {
        let mut out = Vec::new();
        let summary = rewrite(input, &mut out, filter, LIMITS)?;
        Ok((out, summary))
    }

    #[test]
    fn a_clean_tree_round_trips_with_modes_and_links() {
        let input = archive(&[
            ("./", EntryType::Directory, "", 0o755),
            ("./src", EntryType::Directory, "", 0o700),
            ("./src/main.py", EntryType::Regular, "print(1)\n", 0o4755),
            ("./empty", EntryType::Directory, "", 0o755),
            ("./link", EntryType::Symlink, "src/main.py", 0o777),
            ("./src/up", EntryType::Symlink, "../empty", 0o777),
            ("./hard", EntryType::Link, "src/main.py", 0o644),
        ]);
        let (out, summary) = run(&input, &PathFilter::default()).unwrap();
        assert_eq!(
            summary,
            Summary {
                entries: 6,
                bytes: 9
            }
        );
        assert_eq!(
            listing(&out),
            vec![
                ("src".to_owned(), EntryType::Directory, 0o700),
                ("src/main.py".to_owned(), EntryType::Regular, 0o755),
                ("empty".to_owned(), EntryType::Directory, 0o755),
                ("link".to_owned(), EntryType::Symlink, 0o777),
                ("src/up".to_owned(), EntryType::Symlink, 0o777),
                ("hard".to_owned(), EntryType::Link, 0o644),
            ]
        );
    }

    #[test]
    fn escaping_entries_are_refused_by_name() {
        for (entries, needle) in [
            (vec![("../evil", EntryType::Regular, "x", 0o644)], "`..`"),
            (
                vec![("/etc/passwd", EntryType::Regular, "x", 0o644)],
                "absolute",
            ),
            (vec![("a/../../b", EntryType::Regular, "x", 0o644)], "`..`"),
            (
                vec![("esc", EntryType::Symlink, "../../etc", 0o777)],
                "outside",
            ),
            (
                vec![("abs", EntryType::Symlink, "/proc/1/root", 0o777)],
                "absolute",
            ),
            (
                vec![("hl", EntryType::Link, "/etc/shadow", 0o644)],
                "absolute",
            ),
            (
                vec![("hl", EntryType::Link, "later", 0o644)],
                "stored before",
            ),
            (
                vec![("dev", EntryType::Char, "", 0o644)],
                "cannot be stored",
            ),
            (
                vec![("fifo", EntryType::Fifo, "", 0o644)],
                "cannot be stored",
            ),
        ] {
            let err = run(&archive(&entries), &PathFilter::default()).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, ArchiveError::Refused { .. }) && message.contains(needle),
                "{entries:?}: {message}"
            );
            assert!(message.contains(entries[0].0), "names the entry: {message}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let big = "x".repeat(600 * 1024);
        let input = archive(&[
            ("a", EntryType::Regular, &big, 0o644),
            ("b", EntryType::Regular, &big, 0o644),
        ]);
        assert!(matches!(
            run(&input, &PathFilter::default()),
            Err(ArchiveError::TooLarge { limit }) if limit == LIMITS.max_bytes
        ));
        let many: Vec<(String, EntryType, &str, u32)> = (0..101)
            .map(|i| (format!("f{i}"), EntryType::Regular, "", 0o644))
            .collect();
        let many: Vec<(&str, EntryType, &str, u32)> = many
            .iter()
            .map(|(p, k, d, m)| (p.as_str(), *k, *d, *m))
            .collect();
        assert!(matches!(
            run(&archive(&many), &PathFilter::default()),
            Err(ArchiveError::TooManyEntries { .. })
        ));
    }

    #[test]
    fn a_cut_stream_is_an_error_not_a_shorter_version() {
        let input = archive(&[("a", EntryType::Regular, &"y".repeat(5000), 0o644)]);
        let cut = &input[..2048];
        assert!(matches!(
            run(cut, &PathFilter::default()),
            Err(ArchiveError::Read(_))
        ));
    }

    #[test]
    fn include_and_exclude_select_subtrees() {
        let input = archive(&[
            ("src", EntryType::Directory, "", 0o755),
            ("src/a.py", EntryType::Regular, "a", 0o644),
            ("src/a.pyc", EntryType::Regular, "c", 0o644),
            ("node_modules", EntryType::Directory, "", 0o755),
            ("node_modules/x.js", EntryType::Regular, "x", 0o644),
            ("notes.txt", EntryType::Regular, "n", 0o644),
        ]);
        let filter = PathFilter::new(
            &["src".to_owned(), "*.txt".to_owned()],
            &["**/*.pyc".to_owned(), "node_modules".to_owned()],
        )
        .unwrap();
        let (out, _) = run(&input, &filter).unwrap();
        let names: Vec<String> = listing(&out).into_iter().map(|(p, _, _)| p).collect();
        assert_eq!(names, vec!["src", "src/a.py", "notes.txt"]);
        assert!(PathFilter::new(&["a[".to_owned()], &[]).is_err());
    }
}
