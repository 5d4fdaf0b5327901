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

/// Why nothing was exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export starts nothing, so -d/--detach has no meaning here")]
    Detach,
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot find the fleet executable (pass --exe PATH)")]
    Exe(#[source] std::io::Error),
    #[error("--exe {} must be an absolute path (systemd runs it from /)", .0.display())]
    RelativeExe(PathBuf),
    #[error("listen port 0 cannot be a Service port; pass --listen PORT for the export")]
    ListenPortZero,
    #[error("cannot read www directory {}", dir.display())]
    ReadWwwDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ExportError {
    /// 2 for what the flags or fleet.yaml say; 1 for what went wrong writing.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExportError::Exe(_) | ExportError::CreateDir { .. } | ExportError::Write { .. } => {
                exit::FAILURE
            }
            _ => exit::USAGE,
        }
    }
}

pub(crate) fn run(args: ExportArgs) -> Result<(), ExportError> {
    if args.fleet.detach {
        return Err(ExportError::Detach);
    }
    let config = config::load(&args.fleet.overrides())?;
    // A parent directory's fleet.yaml, found as `fleet up` finds it: said.
    if args.fleet.file.is_none()
        && let (Some(file), Ok(cwd)) = (&config.source, std::env::current_dir())
        && file.parent() != Some(cwd.as_path())
    {
        eprintln!("fleet: using {}", file.display());
    }
    let files = match args.target {
        ExportTarget::Systemd => {
            let exe = args
                .exe
                .clone()
                .map_or_else(std::env::current_exe, Ok)
                .map_err(ExportError::Exe)?;
            if !exe.is_absolute() {
                return Err(ExportError::RelativeExe(exe));
            }
            systemd::units(&config, &exe, systemd::exporting_user().as_deref())
        }
        ExportTarget::Kubernetes => kubernetes::manifests(&config, &args.image)?,
    };
    match &args.out_dir {
        None => {
            for f in &files {
                crate::outln!("{}", f.text.trim_end());
            }
        }
        Some(dir) => {
            for p in write_all(dir, &files)? {
                crate::outln!("fleet: wrote {}", p.display());
            }
        }
    }
    Ok(())
}

fn write_all(dir: &Path, files: &[File]) -> Result<Vec<PathBuf>, ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    files
        .iter()
        .map(|f| {
            let path = dir.join(&f.name);
            std::fs::write(&path, &f.text)
                .map(|()| path.clone())
                .map_err(|source| ExportError::Write { path, source })
        })
        .collect()
}
