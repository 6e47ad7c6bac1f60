//! `validate`: every generated WGSL module goes through naga's front end and validator during
//! macro expansion, so nothing invalid reaches a GPU driver.

/// Parses and validates a WGSL module; the error is naga's message.
pub fn wgsl(src: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(src))?;
    Ok(())
}
