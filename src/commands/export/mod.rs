//! `fleet export systemd|kubernetes [-o DIR]`: hand the fleet described by
//! fleet.yaml and the `up` flags to the orchestrators people already run,
//! instead of growing a cluster manager. The config is loaded and validated
//! exactly as `fleet up` does; the renderers (`systemd`, `kubernetes`) are
//! pure functions of it, so they are unit-tested on their text, and the
//! integration tests run `systemd-analyze verify` and `kubernetes-validate`
//! on what the real binary writes.
//!
//! What does not translate is said in a comment at the top of the output,
//! never dropped silently (systemd has no HTTP health check; a Deployment
//! always restarts its pods).

mod kubernetes;
mod systemd;

use std::path::{Path, PathBuf};

use crate::cli::{ExportArgs, ExportTarget};
use crate::config;
use crate::exit;

/// One output file: its name in `-o DIR`, and its text.
#[derive(Debug)]
pub(crate) struct File {
    pub(crate) name: String,
    pub(crate) text: String,
}

pub fn run(args: ExportArgs) -> u8 {
    if args.fleet.detach {
        eprintln!("fleet: export starts nothing, so -d/--detach has no meaning here");
        return exit::USAGE;
    }
    let config = match config::load(&args.fleet) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleet: {e}");
            return exit::USAGE;
        }
    };
    let files = match args.target {
        ExportTarget::Systemd => {
            let exe = match args.exe.clone().map_or_else(std::env::current_exe, Ok) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("fleet: cannot find the fleet executable ({e}); pass --exe PATH");
                    return exit::FAILURE;
                }
            };
            if !exe.is_absolute() {
                eprintln!(
                    "fleet: --exe {} must be an absolute path (systemd runs it from /)",
                    exe.display()
                );
                return exit::USAGE;
            }
            systemd::units(&config, &exe)
        }
        ExportTarget::Kubernetes => match kubernetes::manifests(&config, &args.image) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("fleet: {e}");
                return exit::USAGE;
            }
        },
    };
    match &args.out_dir {
        None => {
            for f in &files {
                crate::outln!("{}", f.text.trim_end());
            }
            exit::OK
        }
        Some(dir) => match write_all(dir, &files) {
            Ok(written) => {
                for p in written {
                    crate::outln!("fleet: wrote {}", p.display());
                }
                exit::OK
            }
            Err(e) => {
                eprintln!("fleet: {e}");
                exit::FAILURE
            }
        },
    }
}

fn write_all(dir: &Path, files: &[File]) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    files
        .iter()
        .map(|f| {
            let path = dir.join(&f.name);
            std::fs::write(&path, &f.text)
                .map(|()| path.clone())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        })
        .collect()
}
