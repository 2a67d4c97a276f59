//! Build script: records the commit the binary was built from as
//! `AMON_COMMIT` (`git rev-parse --short HEAD`), or `unknown` outside a git
//! checkout (a source tarball), for `amon --version` and the start-up log.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=AMON_COMMIT={commit}");
    // Run again only when HEAD moves: HEAD itself (another branch checked
    // out) or the ref it names (a new commit). `--git-path` finds both in a
    // worktree too, where `.git` is a file. A path that does not exist would
    // make cargo run this every build, so only existing ones are named.
    println!("cargo:rerun-if-changed=build.rs");
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &reference]));
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watched.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
