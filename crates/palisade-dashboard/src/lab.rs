//! The lab's last `verify` report, as the lab writes it to
//! `<state dir>/lab/verify.json`.
//!
//! The dashboard only reads it: a report is evidence of what the rendered
//! objects decide and what the dataplane did, which the matrix sets beside
//! what the policy model says. Its schema is the lab's own type
//! ([`FileReport`], declared once in `palisade_lab::verify`).

pub use palisade_lab::verify::{FileProbe, FileReport, ObjectsVerdict, VERIFY_FILE};
use std::path::{Path, PathBuf};

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Reading failed for a reason other than absence.
    #[error("failed to read the lab report {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not JSON of the expected shape.
    #[error("invalid lab report {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Parses a report.
pub fn parse(text: &str) -> Result<FileReport, serde_json::Error> {
    serde_json::from_str(text)
}

/// Reads `<dir>/verify.json`; `Ok(None)` when the lab has not run.
pub fn load(dir: &Path) -> Result<Option<FileReport>, LabError> {
    let path = dir.join(VERIFY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LabError::Read { path, source }),
    };
    parse(&text)
        .map(Some)
        .map_err(|source| LabError::Parse { path, source })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_documented_shape_and_rejects_others() {
        let r = parse(
            r#"{"generated_at":"2026-11-25T12:00:00Z","probes":[{"from":"acme/web","to":"acme/db","port":80,"expected":true,"observed":false,"reason":"default deny"}]}"#,
        )
        .unwrap();
        assert_eq!(r.probes.len(), 1);
        assert_eq!(r.probes[0].from, "acme/web");
        assert!(r.probes[0].expected && !r.probes[0].observed);
        assert!(parse(r#"{"probes":[]}"#).is_err());
        assert!(parse(r#"{"generated_at":"x","probes":[{"from":"a"}]}"#).is_err());
    }

    /// `objects` as `lab verify` writes it now (the verdict with the
    /// deciding object and rule per direction), and as it did before (a
    /// bare boolean), both read.
    #[test]
    fn objects_verdicts_read_whole_and_in_the_old_boolean_form() {
        let r = parse(
            r#"{"generated_at":"x","probes":[
              {"from":"a/b","to":"a/c","port":80,"expected":false,"observed":false,
               "objects":{"allowed":true,"egress":"no-policy","ingress":"allow by CiliumNetworkPolicy tenant-a/p spec.ingress[0]"}},
              {"from":"a/b","to":"a/c","port":81,"expected":false,"observed":false,"objects":false},
              {"from":"a/b","to":"a/c","port":82,"expected":false,"observed":false}]}"#,
        )
        .unwrap();
        let o = r.probes[0].objects.as_ref().unwrap();
        assert!(o.allowed);
        assert_eq!(
            o.ingress,
            "allow by CiliumNetworkPolicy tenant-a/p spec.ingress[0]"
        );
        let old = r.probes[1].objects.as_ref().unwrap();
        assert!(!old.allowed && old.egress.is_empty() && old.ingress.is_empty());
        assert!(r.probes[2].objects.is_none());
        assert!(parse(r#"{"generated_at":"x","probes":[{"from":"a","to":"b","port":1,"expected":true,"observed":true,"objects":"yes"}]}"#).is_err());
    }

    #[test]
    fn missing_file_is_none_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join(VERIFY_FILE), "not json").unwrap();
        let e = crate::error::chain(&load(dir.path()).unwrap_err());
        assert!(e.starts_with("invalid lab report "), "{e}");
        // serde_json's message for a bad literal, said once.
        assert_eq!(e.matches("expected ident").count(), 1, "{e}");
    }
}
