//! Host side of the guest agent. The guest init polls `cmd/` on the 9p
//! share: the host drops `cmd/<id>.sh` (written under a temp name, then
//! renamed, so the agent never runs half a script); the agent runs it and
//! leaves `out/<id>.out`, `.err`, then `.rc` (renamed into place last).
//!
//! Why 9p files rather than a second serial port: output is binary-safe and
//! of any size with no framing protocol to write in busybox sh; the share
//! already carries the plan, scripts and logs; a command that kills the
//! guest (sysrq b) simply never gets an `.rc`, and nothing is left
//! half-read on a channel.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Agent {
    share: PathBuf,
    next: u64,
}

/// A finished command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Agent {
    pub fn new(share: &Path) -> Self {
        Agent { share: share.to_path_buf(), next: 0 }
    }

    fn cmd_dir(&self) -> PathBuf {
        self.share.join("cmd")
    }
    fn out_dir(&self) -> PathBuf {
        self.share.join("out")
    }

    /// Empties the queues: a command left by a boot that died must not run
    /// in the next one.
    pub fn reset(&self) -> io::Result<()> {
        for d in [self.cmd_dir(), self.out_dir()] {
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d)?;
        }
        Ok(())
    }

    /// Queues a command; returns its id.
    pub fn submit(&mut self, command: &str) -> io::Result<String> {
        self.next += 1;
        let id = format!("{:06}", self.next);
        let tmp = self.cmd_dir().join(format!(".{id}.tmp"));
        std::fs::write(&tmp, format!("{command}\n"))?;
        std::fs::rename(&tmp, self.cmd_dir().join(format!("{id}.sh")))?;
        Ok(id)
    }

    /// The result, once the agent has finished the command.
    pub fn poll(&self, id: &str) -> Option<io::Result<Finished>> {
        let rc_path = self.out_dir().join(format!("{id}.rc"));
        let rc = std::fs::read_to_string(&rc_path).ok()?;
        let read = |ext: &str| {
            std::fs::read(self.out_dir().join(format!("{id}.{ext}"))).map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        Some((|| {
            let status =
                rc.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad rc {rc:?}")))?;
            let f = Finished { status, stdout: read("out")?, stderr: read("err")? };
            for ext in ["rc", "out", "err"] {
                let _ = std::fs::remove_file(self.out_dir().join(format!("{id}.{ext}")));
            }
            Ok(f)
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_round_trips_through_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = Agent::new(dir.path());
        agent.reset().unwrap();
        let id = agent.submit("echo hi").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(format!("cmd/{id}.sh"))).unwrap(), "echo hi\n");
        assert!(agent.poll(&id).is_none());
        // What the guest agent does:
        std::fs::write(dir.path().join(format!("out/{id}.out")), "hi\n").unwrap();
        std::fs::write(dir.path().join(format!("out/{id}.err")), "").unwrap();
        std::fs::write(dir.path().join(format!("out/{id}.rc")), "3\n").unwrap();
        let f = agent.poll(&id).unwrap().unwrap();
        assert_eq!(f, Finished { status: 3, stdout: "hi\n".into(), stderr: String::new() });
        assert!(agent.poll(&id).is_none(), "results are consumed");
        let id2 = agent.submit("true").unwrap();
        assert_ne!(id, id2);
    }
}
