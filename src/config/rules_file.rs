//! Reading a rules file: bounded in size and in time ([`super::small_file`]), then the engine's
//! parser ([`crate::rules::check_bytes`]), which does no I/O of its own.

use crate::rules::{check_bytes, Checked, Rules, RulesErrors, MAX_RULES_BYTES};
use std::path::Path;

/// Reads and checks the rules file at `path`, keeping the warnings. A file that cannot be read
/// (missing, a directory, a pipe with no writer or that never ends) is a single error on line
/// 0 naming it; so is one over [`MAX_RULES_BYTES`] or not UTF-8.
pub fn check(path: &Path) -> Result<Checked, RulesErrors> {
    let file = path.display().to_string();
    let cannot =
        |why: String| RulesErrors::unreadable(&file, format!("cannot read the rules file: {why}"));
    let bytes = super::small_file::read_capped(path, MAX_RULES_BYTES as u64)
        .map_err(|e| cannot(e.to_string()))?;
    check_bytes(&bytes, &file)
}

/// [`check`] without the warnings.
pub fn load(path: &Path) -> Result<Rules, RulesErrors> {
    check(path).map(|c| c.rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleError;

    /// The one error of loading `path`.
    fn load_error(path: &Path) -> RuleError {
        match load(path) {
            Ok(rules) => panic!("{} loaded: {rules:?}", path.display()),
            Err(RulesErrors(mut errs)) => {
                assert_eq!(errs.len(), 1, "{errs:#?}");
                errs.remove(0)
            }
        }
    }

    #[test]
    fn an_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules/b2b-saas.toml");
        assert!(load(&path).is_ok_and(|r| r.groups.len() >= 5));
    }

    #[test]
    fn a_missing_file_is_one_error_on_line_zero() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules/no-such-file.toml");
        let e = load_error(&path);
        assert_eq!((e.line, e.key.as_str()), (0, ""));
        assert!(e.message.starts_with("cannot read the rules file: "), "{e}");
    }

    /// Without the cap this reads zeros (valid UTF-8) until memory runs out.
    #[test]
    fn an_endless_file_stops_at_the_size_cap() {
        let e = load_error(Path::new("/dev/zero"));
        assert_eq!((e.file.as_str(), e.line), ("/dev/zero", 0));
        assert!(e.message.contains("larger than 1 MiB"), "{e}");
        assert!(e.to_string().starts_with("/dev/zero: "), "{e}");
    }

    #[test]
    fn a_directory_is_refused_naming_it() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules");
        let e = load_error(&dir);
        assert_eq!(e.file, dir.display().to_string());
        assert!(e.message.contains("is a directory"), "{e}");
    }
}
