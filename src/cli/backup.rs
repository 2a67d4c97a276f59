//! `amon backup DATA_DIR DEST`: consistent copies of the databases of a data
//! dir (the master's `amon.sqlite`, the relay's `relay.sqlite`, whichever
//! are there) while the daemon runs, for upgrades and restores
//! (`docs/upgrade.md`), and the relay's `server_uuid` file (its identity,
//! if it was generated). Mail files are not copied: they are outputs, not
//! state.

use std::path::Path;

use anyhow::{bail, Context as _};

use crate::daemon::SERVER_UUID_FILE;
use crate::store::{backup_database, MASTER_FILE, RELAY_FILE};

pub fn run(data_dir: &Path, dest: &Path) -> anyhow::Result<()> {
    let present: Vec<&str> = [MASTER_FILE, RELAY_FILE]
        .into_iter()
        .filter(|file| data_dir.join(file).is_file())
        .collect();
    if present.is_empty() {
        bail!(
            "{} holds neither {MASTER_FILE} nor {RELAY_FILE}: is it a data_dir?",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    for file in present {
        let (from, to) = (data_dir.join(file), dest.join(file));
        backup_database(&from, &to).with_context(|| format!("cannot back up {}", from.display()))?;
        println!("{}", to.display());
    }
    // Written once and never changed, so a plain copy is consistent.
    let identity = data_dir.join(SERVER_UUID_FILE);
    if identity.is_file() {
        let to = dest.join(SERVER_UUID_FILE);
        std::fs::copy(&identity, &to).with_context(|| format!("cannot copy {}", identity.display()))?;
        println!("{}", to.display());
    }
    Ok(())
}
