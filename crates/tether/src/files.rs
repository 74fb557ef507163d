//! A directory that file transfers may not escape.
//!
//! Requested paths are relative and are checked twice: by their text (no absolute path, no
//! `..`, no empty or NUL-bearing component) and then on disk, after resolving symlinks, so
//! a link inside the root that points outside it is refused too. The original clever-show
//! writes wherever the peer says (docs/protocols/clever-show.md §3); this is the fix.

use std::io;
use std::path::{Component, Path, PathBuf};

/// A file transfer refused or failed on this side.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct FileError {
    /// The transfer and path.
    pub what: String,
    /// Why.
    pub reason: String,
}

/// Why a path was refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Not a plain relative path.
    #[error("{path:?} is refused: {why}")]
    Refused {
        /// The path as requested.
        path: String,
        /// Why.
        why: &'static str,
    },
    /// Resolves (through a symlink) outside the root.
    #[error("{path:?} leads outside the files root")]
    Escapes {
        /// The path as requested.
        path: String,
    },
    /// The filesystem said no.
    #[error("{path:?}: {source}")]
    Io {
        /// The path as requested.
        path: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// The folder inside a root where unfinished uploads wait; no requested path can reach it.
pub const PARTS_DIR: &str = ".tether-parts";

/// The directory transfers are confined to.
#[derive(Debug, Clone)]
pub struct FileRoot {
    root: PathBuf,
}

impl FileRoot {
    /// Confines transfers to `dir`, creating it if needed.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        std::fs::create_dir_all(dir.as_ref())?;
        Ok(FileRoot {
            root: dir.as_ref().canonicalize()?,
        })
    }

    /// The root, canonical.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn checked(&self, requested: &str) -> Result<PathBuf, PathError> {
        let refuse = |why| PathError::Refused {
            path: requested.to_string(),
            why,
        };
        if requested.is_empty() || requested.contains('\0') {
            return Err(refuse("empty or contains NUL"));
        }
        let rel = Path::new(requested);
        let mut clean = PathBuf::new();
        for c in rel.components() {
            match c {
                Component::Normal(part) => clean.push(part),
                Component::CurDir => {}
                Component::ParentDir => return Err(refuse("contains '..'")),
                Component::RootDir | Component::Prefix(_) => return Err(refuse("is absolute")),
            }
        }
        if clean.as_os_str().is_empty() {
            return Err(refuse("names no file"));
        }
        if clean.starts_with(PARTS_DIR) {
            return Err(refuse("is inside the reserved .tether-parts folder"));
        }
        Ok(self.root.join(clean))
    }

    fn inside(&self, requested: &str, real: &Path) -> Result<(), PathError> {
        if real.starts_with(&self.root) {
            Ok(())
        } else {
            Err(PathError::Escapes {
                path: requested.to_string(),
            })
        }
    }

    /// The file to read for `requested`: it must exist and resolve inside the root.
    pub fn for_read(&self, requested: &str) -> Result<PathBuf, PathError> {
        let path = self.checked(requested)?;
        let real = path.canonicalize().map_err(|source| PathError::Io {
            path: requested.to_string(),
            source,
        })?;
        self.inside(requested, &real)?;
        Ok(real)
    }

    /// The file to write for `requested`: missing parent directories are created inside the
    /// root; an existing file or parent that resolves outside the root is refused.
    pub fn for_write(&self, requested: &str) -> Result<PathBuf, PathError> {
        let path = self.checked(requested)?;
        let io_err = |source| PathError::Io {
            path: requested.to_string(),
            source,
        };
        let parent = path.parent().unwrap_or(&self.root);
        // Walk down from the root so no directory is created through a link that escapes.
        let mut dir = self.root.clone();
        for part in parent
            .strip_prefix(&self.root)
            .unwrap_or(Path::new(""))
            .components()
        {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).map_err(io_err)?;
            }
            let real = dir.canonicalize().map_err(io_err)?;
            self.inside(requested, &real)?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if meta.file_type().is_symlink() {
                let real = path.canonicalize().map_err(io_err)?;
                self.inside(requested, &real)?;
            }
        }
        Ok(path)
    }
}

/// Size and SHA-256 (lowercase hex) of the file at `path`.
pub fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, crate::auth::to_hex(&hasher.finalize())))
}

/// [`sha256_file`] on the blocking pool.
pub async fn sha256_file_async(path: &Path) -> io::Result<(u64, String)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// A temporary name beside `dest` (hidden, unique to this process and moment).
pub(crate) fn temp_beside(dest: &Path) -> PathBuf {
    let r = crate::random::u64();
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.tether-tmp-{r:016x}"))
}

/// Writes `bytes` to `dest` so that readers see the old file or the whole new one, never a
/// part: a temporary file beside it, synced, then renamed over it.
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = temp_beside(dest);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tether-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn plain_paths_work_and_escapes_are_refused() {
        let base = temp("escape");
        let root = FileRoot::new(base.join("root")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/secret"), b"no").unwrap();
        let w = root.for_write("shows/a/anim.csv").unwrap();
        std::fs::write(&w, b"ok").unwrap();
        assert_eq!(
            std::fs::read(root.for_read("./shows/a/anim.csv").unwrap()).unwrap(),
            b"ok"
        );
        for bad in [
            "../outside/secret",
            "/etc/passwd",
            "a/../../x",
            "",
            ".",
            ".tether-parts/x.part",
        ] {
            assert!(
                matches!(root.for_read(bad), Err(PathError::Refused { .. })),
                "read {bad:?}"
            );
            assert!(
                matches!(root.for_write(bad), Err(PathError::Refused { .. })),
                "write {bad:?}"
            );
        }
        // Symlinks inside the root that lead out: a file, and a directory.
        std::os::unix::fs::symlink(base.join("outside/secret"), root.path().join("link")).unwrap();
        std::os::unix::fs::symlink(base.join("outside"), root.path().join("dirlink")).unwrap();
        assert!(matches!(
            root.for_read("link"),
            Err(PathError::Escapes { .. })
        ));
        assert!(matches!(
            root.for_write("link"),
            Err(PathError::Escapes { .. })
        ));
        assert!(matches!(
            root.for_read("dirlink/secret"),
            Err(PathError::Escapes { .. })
        ));
        assert!(matches!(
            root.for_write("dirlink/new"),
            Err(PathError::Escapes { .. })
        ));
        assert!(!base.join("outside/new").exists());
        assert!(matches!(
            root.for_read("missing"),
            Err(PathError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(base);
    }
}
