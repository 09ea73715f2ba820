//! `crdgen DIR...` writes the CRDs of `RaftCluster` and `Topic` into each
//! folder given (the repository's `crds/` and the Helm chart's copy), or
//! to standard output when none is given.
//!
//! `crdgen --objects FILE` prints instead the objects the operator would
//! apply for the RaftCluster in FILE (as at creation, in namespace
//! `default`), so they can be read or checked against Kubernetes' schemas.

use anyhow::Context;
use flotilla_operator::crd::RaftCluster;
use flotilla_operator::resources::{BuildInputs, Desired};
use std::path::PathBuf;

fn objects(file: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let mut rc: RaftCluster =
        serde_yaml::from_str(&text).with_context(|| format!("{file} is not a RaftCluster"))?;
    rc.metadata
        .namespace
        .get_or_insert_with(|| "default".to_string());
    rc.metadata
        .uid
        .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".to_string());
    let founders = u32::try_from(rc.spec.replicas.max(1))?;
    let d = Desired::build(
        &rc,
        BuildInputs {
            founders,
            replicas: rc.spec.replicas,
            voters: founders,
        },
    )?;
    for yaml in [
        serde_yaml::to_string(&d.config_map)?,
        serde_yaml::to_string(&d.peers_service)?,
        serde_yaml::to_string(&d.client_service)?,
        serde_yaml::to_string(&d.statefulset)?,
        serde_yaml::to_string(&d.pdb)?,
    ] {
        print!("---\n{yaml}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, file] = args.as_slice()
        && flag == "--objects"
    {
        return objects(file);
    }
    let files = flotilla_operator::crd::crd_files().context("serialising the CRDs")?;
    let dirs: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
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
