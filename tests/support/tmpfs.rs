//! A small tmpfs the test mounts (as root, as CI runs) and fills, for a full disk
//! at a chosen moment; unmounted when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) struct Tmpfs {
    path: PathBuf,
    fillers: std::cell::Cell<u32>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) at `path`, `0700`.
    pub(crate) fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root); run scripts/test.sh as root"
        );
        Tmpfs {
            path: path.to_path_buf(),
            fillers: std::cell::Cell::new(0),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Free bytes on the file system, as `df` says.
    pub(crate) fn free_bytes(&self) -> u64 {
        let output = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .expect("run df");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .expect("df prints the free bytes")
    }

    /// Fills the file system to `leave` free bytes (or as near as its pages
    /// allow) with a new file, returned so the caller can remove it.
    pub(crate) fn fill(&self, leave: u64) -> PathBuf {
        self.fillers.set(self.fillers.get() + 1);
        let filler = self.path.join(format!("filler-{}", self.fillers.get()));
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 20];
        loop {
            let free = self.free_bytes();
            if free <= leave {
                break;
            }
            let take = usize::try_from((free - leave).min(1 << 20)).unwrap();
            if file
                .write_all(&chunk[..take])
                .and_then(|()| file.flush())
                .is_err()
            {
                break;
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
