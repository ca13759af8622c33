//! Child processes of a test or a benchmark: spawned so that they die with it, waited for
//! within a bound, and their logs read.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

/// Spawns `command` so that the child gets `signal` when this process dies, however it
/// dies (no `Drop` runs on a panic that aborts, or a SIGKILL).
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process; a
/// test thread (or a tokio blocking thread) would take its servers with it. So every spawn goes
/// through one thread that lives as long as the process.
pub fn spawn_tied_to_process(
    mut command: Command,
    signal: nix::sys::signal::Signal,
) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    use std::sync::OnceLock;

    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("test-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawn the test-spawner thread");
        tx
    });
    let parent = nix::unistd::getpid();
    // SAFETY: between fork and exec only async-signal-safe system calls run (prctl, getppid),
    // and nothing allocates.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal)
                .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))?;
            // The test process may have died before prctl: then nobody would signal us.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(
                    nix::errno::Errno::ESRCH as i32,
                ));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .send((command, tx))
        .expect("test-spawner thread alive");
    rx.recv().expect("test-spawner thread answers")
}

/// The part of a file from byte `offset` on (what a server wrote to its log since then); empty
/// when it cannot be read.
pub fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.read_to_string(&mut text);
    }
    text
}

/// A file's length, 0 when it does not exist.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Waits for `child` to exit, at most `limit`; `None` when it is still running then (it is
/// killed and reaped, so nothing is left behind).
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last `lines` lines of a file, or a note that it cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T` = stopped, ...).
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may contain spaces; the state follows the last ')'.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}
