//! Files a workflow reads: `for_each: {files: "*.md", dir: NAME}`. The
//! host reads them, from directories the operator names only
//! (`--files-dir NAME=PATH`; `run` adds the workflow file's own directory as
//! `workflow`), never from a path a workflow spells out.
//!
//! A listing gives one item per file, `{dir, path, name, size}`, small
//! enough to store with the task; a file's content (`${item.text}`,
//! `${item.base64}`) is read when its task is about to run, so a batch of
//! large files is never all in memory. Each path is checked again at that
//! point: a match or a file replaced by a symbolic link to somewhere else
//! is refused. This module does not schedule or substitute.

use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The name `run` gives the workflow file's directory, and the directory a
/// `files` pattern or a `file` without `dir` is read from.
pub const WORKFLOW_DIR: &str = "workflow";
/// The name `run` gives the directory it runs in: the original system's
/// files name their files relative to it.
pub const WORKING_DIR: &str = "cwd";
/// Largest file whose content a task reads (the largest result, too).
pub const MAX_FILE_BYTES: u64 = crate::model::MAX_RESULT_BYTES as u64;

/// Why files cannot be listed or read; the message names the file or
/// directory.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct FilesError(String);

/// The directories the operator allows, by name, as canonical paths.
#[derive(Debug, Clone, Default)]
pub struct FileDirs(BTreeMap<String, PathBuf>);

impl FileDirs {
    /// Allow `path` under `name`; it must be a directory.
    pub fn allow(&mut self, name: &str, path: &Path) -> Result<(), FilesError> {
        if !crate::ids::is_id(name) {
            return Err(FilesError(format!("'{name}' is not a directory name: use letters, digits, '_' or '-'")));
        }
        let canonical = path
            .canonicalize()
            .map_err(|e| FilesError(format!("files directory '{name}' ({}): {e}", path.display())))?;
        if !canonical.is_dir() {
            return Err(FilesError(format!("files directory '{name}' ({}) is not a directory", path.display())));
        }
        self.0.insert(name.to_owned(), canonical);
        Ok(())
    }

    /// `NAME=PATH`, as `--files-dir` gives it.
    pub fn allow_flag(&mut self, flag: &str) -> Result<(), FilesError> {
        let (name, path) =
            flag.split_once('=').ok_or_else(|| FilesError(format!("--files-dir '{flag}' is not NAME=PATH")))?;
        self.allow(name, Path::new(path))
    }

    fn dir(&self, name: Option<&str>) -> Result<(&str, &Path), FilesError> {
        let name = name.unwrap_or(WORKFLOW_DIR);
        match self.0.get_key_value(name) {
            Some((name, path)) => Ok((name, path)),
            None => {
                let known: Vec<&str> = self.0.keys().map(String::as_str).collect();
                let known = if known.is_empty() { "none; see --files-dir".to_owned() } else { known.join(", ") };
                Err(FilesError(format!("this host reads no files directory '{name}' (it reads: {known})")))
            }
        }
    }

    /// The files of directory `dir` that `pattern` matches, in path order:
    /// one item each, at most `limit`.
    ///
    /// The walk never follows a link to a directory (a link can only lead
    /// to a loop or out of the directory), skips hidden directories unless
    /// the pattern names one, and looks at most [`MAX_VISITED`] entries.
    /// A link to a file is listed if the file is inside the directory.
    pub fn list(&self, pattern: &str, dir: Option<&str>, limit: usize) -> Result<Vec<Value>, FilesError> {
        check_pattern(pattern).map_err(FilesError)?;
        let (name, base) = self.dir(dir)?;
        let glob = glob::Pattern::new(pattern).map_err(|e| FilesError(format!("files '{pattern}': {e}")))?;
        let options = glob::MatchOptions {
            require_literal_separator: true,
            require_literal_leading_dot: true,
            ..Default::default()
        };
        // Without `**` a pattern names files at its own depth only.
        let depth = if pattern.contains("**") { usize::MAX } else { Path::new(pattern).components().count() };
        let hidden = pattern.starts_with('.') || pattern.contains("/.");
        let walk = walkdir::WalkDir::new(base).min_depth(1).max_depth(depth).follow_links(false).sort_by_file_name();
        let walk = walk
            .into_iter()
            .filter_entry(|e| hidden || e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        let mut items = Vec::new();
        for (visited, entry) in walk.enumerate() {
            if visited == MAX_VISITED {
                return Err(FilesError(format!("files '{pattern}': '{name}' holds more than {MAX_VISITED} entries")));
            }
            let entry = entry.map_err(|e| unreadable(pattern, name, base, &e))?;
            let Ok(relative) = entry.path().strip_prefix(base) else { continue };
            if entry.file_type().is_dir() || !glob.matches_path_with(relative, options) {
                continue;
            }
            let Ok(canonical) = entry.path().canonicalize() else { continue };
            let Ok(metadata) = canonical.metadata() else { continue };
            if !canonical.starts_with(base) || !metadata.is_file() {
                continue; // a link to outside, or not a file: not a file of this directory
            }
            if items.len() == limit {
                return Err(FilesError(format!("files '{pattern}' matches more than {limit} files")));
            }
            let relative = relative.to_string_lossy().into_owned();
            let file_name = entry.file_name().to_string_lossy().into_owned();
            items.push(json!({"dir": name, "path": relative, "name": file_name, "size": metadata.len()}));
        }
        Ok(items)
    }

    /// `item` (from [`FileDirs::list`]) with its content: `text` (UTF-8)
    /// and/or `base64`, as asked.
    /// A task's own `file` (`{path, dir?}`) is read the same way.
    pub fn read(&self, item: &Value, text: bool, base64: bool) -> Result<Value, FilesError> {
        let Some(path) = item["path"].as_str() else {
            return Err(FilesError("the item is not a file of a files directory".into()));
        };
        let (dir, base) = self.dir(item["dir"].as_str())?;
        let shown = format!("'{path}' in '{dir}'");
        let canonical = base.join(path).canonicalize().map_err(|e| FilesError(format!("file {shown}: {e}")))?;
        if !canonical.starts_with(base) {
            return Err(FilesError(format!("file {shown} now leads outside its directory; it is not read")));
        }
        let bytes = read_regular(&canonical).map_err(|e| FilesError(format!("file {shown} {e}")))?;
        let mut item = item.clone();
        if base64 {
            item["base64"] = Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes));
        }
        if text {
            let content = String::from_utf8(bytes)
                .map_err(|_| FilesError(format!("file {shown} is not UTF-8 text; use ${{item.base64}}")))?;
            item["text"] = Value::String(content);
        }
        Ok(item)
    }
}

/// Most entries one listing looks at.
pub const MAX_VISITED: usize = 1_000_000;

/// A listing stopped at an entry it cannot read, named relative to its
/// directory (the host's own paths are not the client's business).
fn unreadable(pattern: &str, name: &str, base: &Path, error: &walkdir::Error) -> FilesError {
    let at = error.path().and_then(|p| p.strip_prefix(base).ok()).map(|p| p.to_string_lossy().into_owned());
    let why = error.io_error().map_or_else(|| "it cannot be read".to_owned(), |e| e.kind().to_string());
    FilesError(format!("files '{pattern}': cannot read '{}' in '{name}': {why}", at.unwrap_or_default()))
}

/// A regular file's bytes, at most [`MAX_FILE_BYTES`]. Anything else is
/// refused before it is opened: a FIFO or device put in place of a listed
/// file would block the read (or never end).
fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let metadata = path.metadata().map_err(|e| format!("cannot be read: {e}"))?;
    if !metadata.is_file() {
        return Err("is not a regular file any more; it is not read".into());
    }
    let too_large = |size: u64| format!("is {size} bytes; files are read up to {MAX_FILE_BYTES}");
    if metadata.len() > MAX_FILE_BYTES {
        return Err(too_large(metadata.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    // A file that grows while it is read is cut off by `take`, and refused.
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A task's own `file` path is relative, stays inside its directory and
/// names no hidden file or directory (as a listing matches none).
pub fn check_path(path: &str) -> Result<(), String> {
    let components = Path::new(path).components();
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if Path::new(path).is_absolute() || components.clone().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(format!("'{path}' leaves its directory: give a path relative to it, without '..'"));
    }
    if components.clone().any(|c| c.as_os_str().to_string_lossy().starts_with('.') && c.as_os_str() != ".") {
        return Err(format!("'{path}' names a hidden file or directory; those are not read"));
    }
    Ok(())
}

/// A pattern is relative and stays inside its directory.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let path = Path::new(pattern);
    if pattern.is_empty() {
        return Err("the pattern is empty".into());
    }
    if path.is_absolute() || path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(format!("'{pattern}' leaves its directory: give a pattern relative to it, without '..'"));
    }
    glob::Pattern::new(pattern).map(|_| ()).map_err(|e| format!("'{pattern}' is not a glob pattern: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_listed_and_read_inside_their_directory_only() {
        let root = tempfile::tempdir().unwrap();
        let docs = root.path().join("docs");
        std::fs::create_dir_all(docs.join("sub")).unwrap();
        std::fs::write(docs.join("b.md"), "bee").unwrap();
        std::fs::write(docs.join("a.md"), "ay").unwrap();
        std::fs::write(docs.join("sub/c.md"), "sea").unwrap();
        std::fs::write(docs.join(".hidden.md"), "no").unwrap();
        std::fs::write(docs.join("bin.md"), [0xff, 0xfe]).unwrap();
        std::fs::write(root.path().join("secret.md"), "outside").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.md"), docs.join("link.md")).unwrap();
        let mut dirs = FileDirs::default();
        dirs.allow("docs", &docs).unwrap();

        let items = dirs.list("*.md", Some("docs"), 100).unwrap();
        let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a.md", "b.md", "bin.md"], "sorted, no hidden files, no link out");
        assert_eq!(items[0], json!({"dir": "docs", "path": "a.md", "name": "a.md", "size": 2}));
        assert_eq!(dirs.list("**/*.md", Some("docs"), 100).unwrap().len(), 4, "sub/c.md too");
        let read = dirs.read(&items[1], true, true).unwrap();
        assert_eq!((read["text"].as_str(), read["base64"].as_str()), (Some("bee"), Some("YmVl")));
        let err = dirs.read(&items[2], true, false).unwrap_err();
        assert!(err.0.contains("is not UTF-8 text; use ${item.base64}"), "{err}");

        assert!(dirs.list("*.md", Some("docs"), 2).unwrap_err().0.contains("more than 2 files"));
        assert!(dirs.list("../*.md", Some("docs"), 9).unwrap_err().0.contains("leaves its directory"));
        assert!(dirs.list("/etc/*", Some("docs"), 9).unwrap_err().0.contains("leaves its directory"));
        assert!(dirs.list("*.md", None, 9).unwrap_err().0.contains("no files directory 'workflow' (it reads: docs)"));
        let forged = json!({"dir": "docs", "path": "../secret.md"});
        assert!(dirs.read(&forged, true, false).unwrap_err().0.contains("leads outside"));
        // A listed file swapped for a link to outside is not read.
        std::fs::remove_file(docs.join("a.md")).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.md"), docs.join("a.md")).unwrap();
        assert!(dirs.read(&items[0], true, false).unwrap_err().0.contains("leads outside"));
        // One swapped for a FIFO is refused, not waited on for ever.
        std::fs::remove_file(docs.join("b.md")).unwrap();
        let made = std::process::Command::new("mkfifo").arg(docs.join("b.md")).status().unwrap();
        assert!(made.success());
        let err = dirs.read(&items[1], true, false).unwrap_err();
        assert!(err.0.contains("'b.md' in 'docs' is not a regular file"), "{err}");
    }

    /// Links to directories are not followed: a loop costs nothing, and a
    /// link to elsewhere lists nothing from there.
    #[test]
    fn a_listing_stays_in_its_directory_whatever_links_it_holds() {
        let root = tempfile::tempdir().unwrap();
        let files = root.path().join("files");
        std::fs::create_dir_all(files.join("sub")).unwrap();
        std::fs::write(files.join("a.txt"), "a").unwrap();
        std::fs::write(files.join("sub/b.txt"), "b").unwrap();
        std::os::unix::fs::symlink(".", files.join("loop")).unwrap();
        std::os::unix::fs::symlink("..", files.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("/proc/self", files.join("proc")).unwrap();
        std::os::unix::fs::symlink("sub/b.txt", files.join("inside.txt")).unwrap();
        let mut dirs = FileDirs::default();
        dirs.allow("files", &files).unwrap();
        let started = std::time::Instant::now();
        let items = dirs.list("**/*.txt", Some("files"), 100_000).unwrap();
        let paths: Vec<&str> = items.iter().map(|i| i["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["a.txt", "inside.txt", "sub/b.txt"]);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
        assert_eq!(dirs.list("*", Some("files"), 9).unwrap().len(), 2, "a.txt and inside.txt, no directories");
        assert!(dirs.list("proc/*", Some("files"), 9).unwrap().is_empty());
    }
}
