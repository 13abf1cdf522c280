//! Errors about data files: every message names the file, the line (or record) and the field,
//! and says what was expected.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based line for line-oriented files; None for whole-file problems.
    pub line: Option<usize>,
    /// The record's id when known (profile id, dialogue id, ...).
    pub id: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(id) = &self.id {
            write!(f, " (`{id}`)")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
    #[error("{at}: field `{field}`: {message}")]
    Field {
        at: Location,
        field: String,
        message: String,
    },
}

impl DataError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn invalid(at: Location, message: impl Into<String>) -> Self {
        DataError::Invalid {
            at,
            message: message.into(),
        }
    }

    pub fn field(at: Location, field: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::Field {
            at,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Reads a file, mapping the error to one that names the path.
pub fn read_to_string(path: &std::path::Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}
