//! `validate`: every generated WGSL module goes through naga's front end and validator during
//! macro expansion, so nothing invalid reaches a GPU driver.

/// Parses and validates a WGSL module; the error is naga's message. Subgroup operations, f16
/// and cooperative matrices are allowed: the runtime only runs shaders that use them on
/// adapters that have them.
pub fn wgsl(src: &str) -> Result<(), String> {
    use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet};
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        Capabilities::default()
            | Capabilities::SUBGROUP
            | Capabilities::SHADER_FLOAT16
            | Capabilities::COOPERATIVE_MATRIX,
    )
    .subgroup_stages(ShaderStages::COMPUTE)
    .subgroup_operations(SubgroupOperationSet::BASIC | SubgroupOperationSet::ARITHMETIC)
    .validate(&module)
    .map_err(|e| e.emit_to_string(src))?;
    Ok(())
}
