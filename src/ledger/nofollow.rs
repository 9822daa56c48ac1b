//! Create, don't follow: the one way sf2520 opens, creates and moves files in a
//! directory that someone else may have planted a link in (KY's inbox, which
//! KY's group can write; the data directory and the outbox, after a careless
//! restore). A symbolic link where sf2520 expects its own file or directory
//! makes the operation fail with an error naming the path; it is never followed,
//! so a link cannot make sf2520 write, truncate or move files elsewhere.
//!
//! `O_NOFOLLOW` protects only a path's last component, so moves between
//! directories go through directory handles opened without following
//! ([`open_dir`], [`move_no_replace`]): a directory swapped for a link after it
//! was checked is not the one the move lands in.

use std::ffi::{CString, OsStr};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// A symbolic link found where sf2520 expected its own file or directory.
#[derive(Debug)]
struct LinkRefused;

impl std::fmt::Display for LinkRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "it is a symbolic link, which sf2520 never follows (a link there could make it \
             write or move files elsewhere); remove the link and run again",
        )
    }
}

impl std::error::Error for LinkRefused {}

/// The error for a symbolic link where sf2520 expected its own file or
/// directory (callers add the path).
fn link_refused() -> io::Error {
    io::Error::other(LinkRefused)
}

/// Whether `error` is this module's refusal of a symbolic link.
pub fn is_link_refusal(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<LinkRefused>())
}

/// Whether `error` is what `O_NOFOLLOW` returns for a link (`ELOOP`).
fn is_link_error(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ELOOP)
}

/// Opens `path` with `options` (which say read, write, create, …) without
/// following a symbolic link at its last component, and without blocking on a
/// FIFO. A link is refused with an error that says so.
pub fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    open_flags(path, options, 0)
}

fn open_flags(path: &Path, options: &mut OpenOptions, extra: libc::c_int) -> io::Result<File> {
    options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | extra)
        .open(path)
        .map_err(|error| {
            if is_link_error(&error) {
                link_refused()
            } else {
                error
            }
        })
}

/// Creates a new file `0600`; fails if anything (a link included) has the name.
pub fn create_new(path: &Path) -> io::Result<File> {
    open(
        path,
        OpenOptions::new().write(true).create_new(true).mode(0o600),
    )
}

/// Opens `path` for writing from the start, creating it `0600` if missing; a
/// link is refused, never truncated through.
pub fn create_or_truncate(path: &Path) -> io::Result<File> {
    open(
        path,
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600),
    )
}

/// Makes sure `path` is a directory of its own: created `0700` if missing; a
/// symbolic link (to a directory or not) or anything else that is not a
/// directory is refused.
pub fn private_dir(path: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => return Ok(()),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    not_a_link(path)?;
    if !fs::symlink_metadata(path)?.is_dir() {
        return Err(io::Error::other(
            "it is not a directory; move it away and run again",
        ));
    }
    Ok(())
}

/// Refuses `path` if it is a symbolic link (an existing directory or file of
/// sf2520's own that someone replaced with one).
pub fn not_a_link(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(link_refused());
    }
    Ok(())
}

/// Opens the directory `path` for moves ([`move_no_replace`]) without following
/// a link at its last component.
pub fn open_dir(path: &Path) -> io::Result<File> {
    open_flags(path, OpenOptions::new().read(true), libc::O_DIRECTORY)
}

/// Creates (or truncates) the file `name` in the directory `dir` (opened with
/// [`open_dir`]), `0600`, without following a link: the file lands in the
/// directory that was opened, even if its path now names something else.
pub fn create_in(dir: &File, name: &OsStr) -> io::Result<File> {
    let name = c_name(name)?;
    let mode: libc::c_uint = 0o600;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `dir` is an open directory borrowed for the call and `name` a
    // NUL-terminated C string that outlives it; the mode is passed as the
    // variadic argument open(2) expects with O_CREAT.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) };
    if fd < 0 {
        let error = io::Error::last_os_error();
        return Err(if is_link_error(&error) {
            link_refused()
        } else {
            error
        });
    }
    // SAFETY: `fd` was just returned by openat and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    if name.as_bytes().contains(&b'/') {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "a file name with '/' in it",
        ));
    }
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "a file name with a NUL byte"))
}

/// Moves `from_name` in the directory `from_dir` to `to_name` in `to_dir` (both
/// opened with [`open_dir`]), refusing to replace anything already there
/// (`AlreadyExists`). Names are plain names, never paths.
pub fn move_no_replace(
    from_dir: &File,
    from_name: &OsStr,
    to_dir: &File,
    to_name: &OsStr,
) -> io::Result<()> {
    let (from, to) = (c_name(from_name)?, c_name(to_name)?);
    // SAFETY: both descriptors are open directories owned by the `File`s borrowed
    // for the call, and both names are NUL-terminated C strings that outlive it.
    let result = unsafe {
        libc::renameat2(
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_planted_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("link");
        symlink(&target, &link).unwrap();
        let error = create_or_truncate(&link).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(
            create_new(&link).unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        let linked_dir = dir.path().join("linked-dir");
        symlink(dir.path(), &linked_dir).unwrap();
        let error = private_dir(&linked_dir).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(open_dir(&linked_dir).is_err());
        private_dir(&dir.path().join("own")).unwrap();
        private_dir(&dir.path().join("own")).unwrap();
    }

    #[test]
    fn a_move_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"a").unwrap();
        fs::write(dir.path().join("b"), b"b").unwrap();
        let handle = open_dir(dir.path()).unwrap();
        let error =
            move_no_replace(&handle, OsStr::new("a"), &handle, OsStr::new("b")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AlreadyExists);
        move_no_replace(&handle, OsStr::new("a"), &handle, OsStr::new("c")).unwrap();
        assert_eq!(fs::read(dir.path().join("c")).unwrap(), b"a");
        assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"b");
    }
}
