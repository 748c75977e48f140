//! Path normalisation: a normalised path is absolute, has no `.`/`..`/empty components, and
//! normalising it again changes nothing; a relative path is never taken for an absolute one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permission_broker_policy::normalize_absolute;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    match normalize_absolute(path) {
        Some(normal) => {
            assert!(path.starts_with('/'));
            assert!(normal.starts_with('/'));
            assert!(
                normal == "/"
                    || normal[1..]
                        .split('/')
                        .all(|c| !c.is_empty() && c != "." && c != ".."),
                "{normal:?}"
            );
            assert_eq!(
                normalize_absolute(&normal).as_deref(),
                Some(normal.as_str())
            );
        }
        None => assert!(!path.starts_with('/'), "{path:?} is absolute"),
    }
});
