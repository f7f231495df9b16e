//! A config problem with its YAML path and position, and every problem of
//! one load. Validation reports them all at once; it must not stop at the
//! first.

use std::fmt;
use std::path::PathBuf;

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// YAML path such as `routes[1].target`; empty for whole-file errors.
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at_line(line: usize, message: impl Into<String>) -> Self {
        Self { path: String::new(), line: Some(line), column: None, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
            (Some(l), None) => write!(f, " (line {l})"),
            _ => Ok(()),
        }
    }
}

/// Every error of one load attempt.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(f, "{}: {n} error{}", self.file.display(), if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
