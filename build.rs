//! Embeds the commit the binary was built from, for `keepalive --version` and the build-info
//! metric: `git rev-parse` in a checkout, else `KEEPALIVE_BUILD_COMMIT` (a container build
//! whose context has no `.git` passes it as a build argument), else "unknown" (a source
//! tarball).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KEEPALIVE_BUILD_COMMIT");
    // Rebuild when HEAD moves: the file itself (a branch switch) and the branch it names.
    let git = Path::new(".git");
    if git.is_dir() {
        println!("cargo:rerun-if-changed=.git/HEAD");
        if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
            && let Some(branch) = head.trim().strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed=.git/{branch}");
        }
        println!("cargo:rerun-if-changed=.git/packed-refs");
    }
    let commit = std::env::var("KEEPALIVE_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().to_owned())
        .or_else(from_git)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=KEEPALIVE_COMMIT={commit}");
}

fn from_git() -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !commit.is_empty()).then_some(commit)
}
