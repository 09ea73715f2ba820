//! Writes the CRDs of `RaftCluster` and `Topic` as YAML: into the folders
//! given as arguments (the repository's `crds/` and the Helm chart's copy),
//! or to standard output when none is given.

use anyhow::Context;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let files = flotilla_operator::crd::crd_files().context("serialising the CRDs")?;
    let dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        for (_, yaml) in &files {
            print!("---\n{yaml}");
        }
        return Ok(());
    }
    for dir in &dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, yaml) in &files {
            let path = dir.join(name);
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
