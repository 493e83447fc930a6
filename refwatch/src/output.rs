//! Files refwatch writes, usually as root: never through a symbolic link, and never over an
//! existing file unless told to (`--force`).

use std::{
    fs::File,
    io,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// What to do with a file already at the path. A symbolic link there is never followed,
/// whatever this says: a link planted in a shared directory would point a root-owned write
/// anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    Refuse,
    Replace,
}

impl Existing {
    /// `--force` replaces.
    pub const fn forced(force: bool) -> Self {
        if force {
            Existing::Replace
        } else {
            Existing::Refuse
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{} is a symbolic link: refwatch does not write through one", .0.display())]
    Symlink(PathBuf),
    #[error("{} exists: --force overwrites it", .0.display())]
    Exists(PathBuf),
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, io::Error),
}

/// Refuses a path [`create`] would refuse, before the work whose result goes there starts
/// (attaching probes, running a command): the user fixes the path first.
pub fn check(path: &Path, existing: Existing) -> Result<(), OutputError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(OutputError::Symlink(path.into())),
        Ok(_) if existing == Existing::Refuse => Err(OutputError::Exists(path.into())),
        _ => Ok(()),
    }
}

/// Creates (or with [`Existing::Replace`] truncates) the file at `path`, atomically refusing a
/// symbolic link (O_NOFOLLOW) and, with [`Existing::Refuse`], any existing file (O_EXCL).
pub fn create(path: &Path, existing: Existing) -> Result<File, OutputError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).custom_flags(libc::O_NOFOLLOW);
    match existing {
        Existing::Refuse => options.create_new(true),
        Existing::Replace => options.create(true).truncate(true),
    };
    options.open(path).map_err(|e| match e.raw_os_error() {
        // O_EXCL answers EEXIST for a link too: name the link as such.
        Some(libc::ELOOP | libc::EEXIST) => match check(path, Existing::Replace) {
            Err(link) => link,
            Ok(()) => OutputError::Exists(path.into()),
        },
        _ => OutputError::Io(path.into(), e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("refwatch-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn a_planted_link_is_never_followed() {
        let (victim, link) = (scratch("victim"), scratch("link"));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        for existing in [Existing::Refuse, Existing::Replace] {
            assert!(matches!(
                check(&link, existing),
                Err(OutputError::Symlink(_))
            ));
            assert!(matches!(
                create(&link, existing),
                Err(OutputError::Symlink(_))
            ));
        }
        assert!(!victim.exists(), "wrote through the link");
    }

    #[test]
    fn an_existing_file_is_kept_unless_forced() {
        use std::io::Write;
        let path = scratch("kept");
        std::fs::write(&path, "keep").unwrap();
        assert!(matches!(
            check(&path, Existing::Refuse),
            Err(OutputError::Exists(_))
        ));
        assert!(matches!(
            create(&path, Existing::Refuse),
            Err(OutputError::Exists(_))
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep");
        check(&path, Existing::Replace).unwrap();
        write!(create(&path, Existing::Replace).unwrap(), "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let fresh = scratch("fresh");
        check(&fresh, Existing::Refuse).unwrap();
        create(&fresh, Existing::Refuse).unwrap();
        assert!(fresh.exists());
    }
}
