//! The S3-compatible server of the tests (`scripts/s3-env`, which `scripts/test` starts),
//! shared by the tests of the registry on object storage in models/, training/ and serving/.

/// The bucket `LEADSCORE_TEST_S3` names (`s3://leadscore`; the `AWS_*` settings beside it
/// are read from the environment by whatever opens it), or `None` when there is none, in
/// which case the caller skips (or falls back to a folder), unless `LEADSCORE_REQUIRE_S3` is
/// set: then a missing server fails.
pub fn s3_bucket() -> Option<String> {
    match std::env::var("LEADSCORE_TEST_S3") {
        Ok(url) => Some(url.trim_end_matches('/').to_owned()),
        Err(_) => {
            assert!(
                std::env::var_os("LEADSCORE_REQUIRE_S3").is_none(),
                "LEADSCORE_REQUIRE_S3 is set but LEADSCORE_TEST_S3 is not"
            );
            eprintln!("no S3: LEADSCORE_TEST_S3 is not set");
            None
        }
    }
}
