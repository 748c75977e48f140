//! Binding the broker's Unix socket safely.
//!
//! The default path, `/tmp/perm.sock`, is in a world-writable directory, so whatever is at the
//! path may belong to someone else. We never follow it, never reuse a live socket and never delete
//! anything we do not own.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("socket path `{0}` is not a filesystem path (abstract sockets are not supported)")]
    Abstract(PathBuf),
    #[error("socket path `{path}` is {len} bytes long; Unix sockets allow at most 107")]
    TooLong { path: PathBuf, len: usize },
    #[error("`{0}` exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error(
        "`{path}` is a socket owned by uid {owner}, not by this daemon (uid {me}); refusing to replace it"
    )]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("a broker is already listening on `{0}`; stop it first or choose another --socket")]
    InUse(PathBuf),
    #[error("cannot bind `{path}`: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "cannot bind `{path}`: {source}: its directory `{dir}` is owned by uid {owner} with mode {mode:o}, and this daemon runs as uid {me}; make the directory the daemon's (`install -d -o {me} -m 0755 {dir}`; in Docker, before bind-mounting it)"
    )]
    DirectoryNotWritable {
        path: PathBuf,
        source: io::Error,
        dir: String,
        owner: u32,
        mode: u32,
        me: u32,
    },
}

/// A bind refused for want of write access says whose the directory is, and what to do.
fn explain_bind_error(path: &Path, source: io::Error) -> BindError {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if source.kind() == io::ErrorKind::PermissionDenied => {
            BindError::DirectoryNotWritable {
                path: path.to_path_buf(),
                source,
                dir: dir.display().to_string(),
                owner: m.uid(),
                mode: m.permissions().mode() & 0o7777,
                me: nix::unistd::geteuid().as_raw(),
            }
        }
        _ => BindError::Io {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// The socket file the daemon created, removed again on shutdown if it is still ours.
#[derive(Debug)]
pub struct BoundSocket {
    pub listener: UnixListener,
    path: PathBuf,
    inode: (u64, u64),
}

impl BoundSocket {
    /// The socket a previous process of this daemon bound and handed over: its file is this
    /// process's to watch and remove now.
    pub fn adopt(listener: UnixListener, path: PathBuf, inode: (u64, u64)) -> BoundSocket {
        BoundSocket {
            listener,
            path,
            inode,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket file's device and inode.
    pub fn inode(&self) -> (u64, u64) {
        self.inode
    }

    /// Resolves once the socket file is gone or replaced (see [`watch_path`]).
    pub fn vanished(&self) -> impl Future<Output = String> + use<> {
        watch_path(self.path.clone(), Some(self.inode))
    }

    /// Removes the socket file unless it has been replaced by something else meanwhile.
    pub fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.inode
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds a listening socket at `path` with permissions `mode`.
///
/// A stale socket (ours, nobody listening) is replaced. A live one, a non-socket, or a socket owned
/// by another user is refused.
pub fn bind(path: &Path, mode: u32) -> Result<BoundSocket, BindError> {
    let bytes = path.as_os_str().len();
    if path.as_os_str().is_empty() || path.to_string_lossy().starts_with(['@', '\0']) {
        return Err(BindError::Abstract(path.to_path_buf()));
    }
    if bytes > 107 {
        return Err(BindError::TooLong {
            path: path.to_path_buf(),
            len: bytes,
        });
    }
    let io_err = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
        Ok(existing) => {
            if !existing.file_type().is_socket() {
                return Err(BindError::NotASocket(path.to_path_buf()));
            }
            let me = nix::unistd::geteuid().as_raw();
            if existing.uid() != me {
                return Err(BindError::ForeignOwner {
                    path: path.to_path_buf(),
                    owner: existing.uid(),
                    me,
                });
            }
            match UnixStream::connect(path) {
                Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing stale socket");
                    std::fs::remove_file(path).map_err(io_err)?;
                }
                Err(e) => return Err(io_err(e)),
            }
        }
    }
    // Create the socket with no access for anyone but us, then widen to `mode`: there is no
    // moment at which the socket is more open than configured.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| explain_bind_error(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    let m = std::fs::symlink_metadata(path).map_err(io_err)?;
    Ok(BoundSocket {
        listener,
        path: path.to_path_buf(),
        inode: (m.dev(), m.ino()),
    })
}

/// How often the socket file is checked.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Resolves, with what happened, once the file at `path` is no longer the socket the daemon
/// listens on (`inode`; for an inherited socket, the file found at the path at start): removed,
/// or replaced by another file. Nobody can connect to the daemon through that path any more, so
/// it must not go on looking healthy.
pub fn watch_path(path: PathBuf, inode: Option<(u64, u64)>) -> impl Future<Output = String> {
    let inode = inode.or_else(|| {
        std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| (m.dev(), m.ino()))
    });
    async move {
        let Some(inode) = inode else {
            // An inherited socket without a file (abstract, or already gone at start).
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            match std::fs::symlink_metadata(&path) {
                Ok(m) if (m.dev(), m.ino()) == inode => {}
                Ok(_) => {
                    return format!(
                        "the socket `{}` was replaced by another file",
                        path.display()
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return format!("the socket `{}` was removed", path.display());
                }
                Err(e) => {
                    return format!("the socket `{}` cannot be checked: {e}", path.display());
                }
            }
        }
    }
}
