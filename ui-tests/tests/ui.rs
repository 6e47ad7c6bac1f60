//! Compile-fail cases (with `.stderr` snapshots of mia's diagnostics) and compile-pass cases
//! covering the DSL. Regenerate snapshots with `TRYBUILD=overwrite cargo test -p ui-tests`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
